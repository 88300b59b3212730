"""kagglerun: experiments as TOML files, one tested training core, Kaggle GPU kernels, one report."""

__version__ = "0.1.0"
