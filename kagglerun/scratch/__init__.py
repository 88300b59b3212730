"""The from-scratch engine (the seed's part B): define-by-run autograd on NumPy, or CuPy on a GPU.

Part of the payload (notebook/payload.py): a notebook for `engine = "scratch"` writes it beside the core and
imports `scratch.engine`, which registers the engine. It imports only the standard library, NumPy, torch
and the core (`..core`), with relative imports.
"""
