"""The from-scratch engine (the seed's part B): define-by-run autograd on NumPy, or CuPy on a GPU.

The modules below are inlined into rendered notebooks in this order (each only uses names defined by
the ones before it, plus the torch core's `engine` and `augment` modules), so this file imports none of
them: `from kagglerun.scratch.engine import ScratchEngine` registers the engine when needed.
"""

MODULES = ("core", "functions", "conv", "layers", "optimizers", "models", "engine")
