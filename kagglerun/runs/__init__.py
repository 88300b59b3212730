"""Runs on Kaggle: the ledger of what was pushed, push planning (pure), push, status, verified outcomes, pull.

May import: `kagglerun.kaggle` (never the SDK itself), `kagglerun.notebook` (to render before a push),
`kagglerun.experiments`, `kagglerun.progress`, `kagglerun.states`, the payload's contract, and below.
"""
