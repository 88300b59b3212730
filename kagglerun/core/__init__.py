"""The training core: the payload every rendered notebook writes as a package and imports (notebook/payload.py).

It imports only the standard library, torch (torchvision, matplotlib and scikit-learn lazily, where present)
and itself, with relative imports: never the rest of kagglerun, click, Jinja or pydantic, so that a Kaggle
kernel needs nothing installed. tests/test_layout.py holds that rule.
"""
