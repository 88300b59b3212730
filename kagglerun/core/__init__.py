"""The training core: inlined into every rendered notebook, so it imports only the standard library and torch.

Its modules, in the order they are inlined (each may use names defined by the ones before it): MODULES.
"""

MODULES = ("contract", "engine", "data", "augment", "models", "torch_engine", "pack", "train")
