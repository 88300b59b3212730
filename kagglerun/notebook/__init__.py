"""Notebooks: the payload (the training core as the package a notebook writes), the one Jinja environment,
rendering experiments and packs into Kaggle-ready folders (a workspace's models checked on a dummy batch and
carried along), executing a notebook with nbclient, local runs.

May import: jinja2, nbformat, nbclient, `kagglerun.experiments`, `kagglerun.kaggle` (for the client's own
push validation and the credentials' user name), `kagglerun.progress`, `kagglerun.states`, the payload's contract
and its models (to build a model once on the CPU).
"""
