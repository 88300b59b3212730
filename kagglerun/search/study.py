"""The Optuna study of a search, in results/search/EXP/study.db (SQLite: `optuna-dashboard
sqlite:///results/search/EXP/study.db` opens it): trials asked with the `[search.space]` distributions,
each rung's value reported as an intermediate value at its epochs, pruned trials told so (Optuna keeps their
last value), the rest told their final value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .spec import Param, SearchSpec

STUDY_FILE = "study.db"


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distributions(spec: SearchSpec) -> dict[str, Any]:
    optuna = _optuna()
    d = optuna.distributions

    def one(p: Param) -> Any:
        bounds = p.range(p.kind)
        assert bounds is not None
        if p.kind == "log":
            return d.FloatDistribution(bounds[0], bounds[1], log=True)
        if p.kind == "uniform":
            return d.FloatDistribution(bounds[0], bounds[1])
        if p.kind == "int":
            return d.IntDistribution(bounds[0], bounds[1])
        return d.CategoricalDistribution(list(bounds))

    return {key: one(p) for key, p in spec.space.items()}


class Study:
    """One search's Optuna study, created on first use and loaded when the search is run again."""

    def __init__(self, folder: Path, name: str, spec: SearchSpec):
        optuna = _optuna()
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / STUDY_FILE
        self.storage = optuna.storages.RDBStorage(f"sqlite:///{self.path}")
        self.study = optuna.create_study(study_name=name, storage=self.storage, direction="maximize",
                                         load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=spec.seed))
        self.distributions = distributions(spec)

    def ask(self) -> tuple[int, dict[str, Any]]:
        """A new trial: its number and parameters."""
        trial = self.study.ask(self.distributions)
        return trial.number, dict(trial.params)

    def _trial(self, number: int) -> Any:
        frozen = self.study.trials[number]
        return _optuna().Trial(self.study, frozen._trial_id)

    def report(self, number: int, value: float, epochs: int) -> None:
        self._trial(number).report(value, epochs)

    def finish(self, number: int, value: float | None, state: str) -> None:
        """Tell the study how the trial ended: "complete" (with its value), "pruned" or "failed"."""
        optuna = _optuna()
        if self.study.trials[number].state != optuna.trial.TrialState.RUNNING:
            return  # told already (a search run again after telling and before saving its state)
        states = optuna.trial.TrialState
        if state == "complete" and value is not None:
            self.study.tell(number, value)
        elif state == "pruned":
            self.study.tell(number, state=states.PRUNED)
        else:
            self.study.tell(number, state=states.FAIL)
