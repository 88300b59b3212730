"""A quota-aware hyper-parameter search over an experiment's `[search]` table: Optuna's ask-and-tell with its
study in results/search/EXP/study.db, successive halving over Kaggle sessions (trials continue from their
checkpoints), every trial a normal experiment `EXP.t<N>`, and a GPU-hour budget never exceeded by its own
estimate. May import: the standard library, pydantic, optuna, and kagglerun's experiments, runs, kaggle,
progress, states and workspace."""
