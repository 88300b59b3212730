"""`kagglerun search EXP`: the search of an experiment's `[search]` table, rung by rung.

Every trial is a normal experiment, `EXP.t<N>`, whose overrides are its parameters and the rung's
`training.epochs`; it is pushed, followed, pulled and verified by the runs package like any other (one
trial per kernel, so each continues from its own output) and recorded in the ledger with its overrides, so
`status`, `pull` and `report` know it. A rung trains every continuing trial to the rung's epochs; a
trial that continues resumes from its checkpoint (runs.longer), it does not start over. After a rung the best
`keep` fraction continue (halving.promote); the others are pruned.

The budget: before the first rung, as many trials start as the whole schedule affords by the estimate
(runs.estimate); before each rung its sessions are charged to the budget, best trial first, and those that
no longer fit are not run: the search stops at its budget. Its state, results/search/EXP/search.json, is
written after every step, with the Optuna study beside it: run `kagglerun search EXP` again after an
interruption and it continues where it stopped; a finished trial is never trained again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.contract import atomic_write_text, read_summary
from ..errors import ExperimentError, KernelError, PullError
from ..experiments.store import SEARCH
from ..kaggle import KaggleKernels
from ..progress import SILENT, Observer
from ..runs.estimate import STARTUP_SECONDS, epoch_seconds
from ..runs.pull import pull_experiments
from ..runs.push import PushOptions, push_experiments
from ..workspace import Workspace
from . import halving
from .spec import SearchSpec, parse_spec
from .study import Study

SEARCH_DIR = "search"
STATE_FILE = "search.json"


@dataclass
class Trial:
    number: int
    name: str
    params: dict[str, Any]
    rung: int = -1  # the last rung it finished
    charged: int = -1  # the last rung whose session was charged to the budget
    values: dict[str, float | None] = field(default_factory=dict)  # epochs -> the metric after them
    state: str = "active"  # active, pruned, complete, failed, stopped (by the budget)

    @property
    def value(self) -> float | None:
        done = [v for v in self.values.values() if v is not None]
        return done[-1] if done else None


@dataclass
class SearchState:
    experiment: str
    metric: str
    rungs: list[int]
    budget_seconds: float
    spent_seconds: float = 0.0
    trials: list[Trial] = field(default_factory=list)
    decided: list[int] = field(default_factory=list)  # rungs whose trials were chosen
    state: str = "running"  # running, complete, budget (it limited the trials or stopped a rung)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for item, t in zip(data["trials"], self.trials, strict=True):
            item["value"] = t.value
            item["epochs"] = self.rungs[t.rung] if t.rung >= 0 else 0
        return data


def search_folder(ws: Workspace, name: str) -> Path:
    return ws.results / SEARCH_DIR / name


def load_search(ws: Workspace, name: str) -> tuple[SearchSpec, Path]:
    """The validated `[search]` table of experiments/NAME.toml and the file's path."""
    store = ws.store()
    path = store.path(name)
    if not path.is_file():
        raise ExperimentError(f"unknown search {name!r}: no file {path}")
    raw = store.raw(name)
    if SEARCH not in raw:
        raise ExperimentError(f"{path}: no [search] table")
    spec = parse_spec(raw[SEARCH], str(path))
    store.load(name)  # the base settings are valid
    for key, param in spec.space.items():  # every searched key exists and takes its range's values
        bounds = param.range(param.kind)
        assert bounds is not None
        for value in ([bounds[0], bounds[-1]] if param.kind != "choice" else list(bounds)):
            ws.with_points({f"{name}.space": {key: value}}).store().load(f"{name}.space")
    return spec, path


def _read_state(path: Path) -> SearchState | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ExperimentError(f"{path}: unreadable search state: {e} (move it aside to start the search over)") from None
    data.pop("value", None)
    trials = []
    for t in data.pop("trials", []):
        t.pop("value", None)
        t.pop("epochs", None)
        trials.append(Trial(**t))
    return SearchState(**data, trials=trials)


def _save(path: Path, state: SearchState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(state.to_json(), indent=2) + "\n")


def _rung_done(state: SearchState, rung: int) -> None:
    """Called after each rung's results are saved (a test interrupts the search here)."""


def _metric(summary: dict[str, Any] | None, metric: str) -> float | None:
    if not summary:
        return None
    value = summary.get("best_val_acc") if metric == "val_acc" else None
    value = value if value is not None else summary.get("best_test_acc")
    return float(value) if value is not None else None


def run_search(ws: Workspace, name: str, *, api: KaggleKernels, observer: Observer = SILENT, poll: float = 15.0,
               sleep: Callable[[float], None] = time.sleep) -> SearchState:
    """Run (or continue) the search of experiments/NAME.toml to its end or its budget; see the module doc."""
    return _Search(ws, name, api, observer, poll, sleep).run()


class _Search:
    def __init__(self, ws: Workspace, name: str, api: KaggleKernels, observer: Observer, poll: float,
                 sleep: Callable[[float], None]):
        self.ws, self.name, self.api, self.observer, self.poll, self.sleep = ws, name, api, observer, poll, sleep
        self.spec, _ = load_search(ws, name)
        folder = search_folder(ws, name)
        self.path = folder / STATE_FILE
        spec = self.spec
        self.state = _read_state(self.path) or SearchState(name, spec.metric, list(spec.rungs), spec.gpu_hours * 3600)
        if self.state.rungs != list(spec.rungs):
            raise ExperimentError(f"{ws.store().path(name)}: search.rungs: changed from {self.state.rungs} since the "
                                  f"search started ({self.path}); move that folder aside to start over")
        self.state.budget_seconds = spec.gpu_hours * 3600
        self.study = Study(folder, name, spec)

    def save(self) -> None:
        _save(self.path, self.state)

    def trial_ws(self, trials: list[Trial], epochs: int) -> Workspace:
        return self.ws.with_points({t.name: {**t.params, "training.epochs": epochs} for t in trials})

    def run(self) -> SearchState:
        if not self.state.trials:
            self.start()
        for r, epochs in enumerate(self.spec.rungs):
            if r > 0 and r not in self.state.decided:
                self.choose(r)
            todo = sorted((t for t in self.state.trials if t.state == "active" and t.rung == r - 1),
                          key=lambda t: -(t.value or 0.0))
            if not todo:
                continue
            todo = self.charge(r, todo)
            if not todo:
                break
            self.train(r, epochs, todo)
            _rung_done(self.state, r)
        if self.state.state == "running":
            self.state.state = "complete"
        self.save()
        return self.state

    def start(self) -> None:
        """As many trials as the whole schedule affords."""
        spec, state = self.spec, self.state
        per_epoch = epoch_seconds(self.ws, self.ws.store().load(self.name))
        n = halving.trials_within(state.budget_seconds - state.spent_seconds, spec.trials, spec.rungs, spec.keep,
                                  per_epoch, STARTUP_SECONDS)
        if n == 0:
            one = halving.schedule_seconds(1, spec.rungs, spec.keep, per_epoch, STARTUP_SECONDS) / 3600
            raise ExperimentError(f"{self.name}: search.gpu_hours: {spec.gpu_hours} h affords no trial "
                                  f"(one needs about {one:.2f} h)")
        if n < spec.trials:
            state.state = "budget"
            self.observer.event(f"{self.name}: the budget of {spec.gpu_hours} GPU hours affords {n} of "
                                f"{spec.trials} trials")
        for _ in range(n):
            number, params = self.study.ask()
            state.trials.append(Trial(number, f"{self.name}.t{number}", params))
        self.save()

    def choose(self, r: int) -> None:
        """The best fraction of rung r-1 continue to rung r; the others are pruned."""
        spec = self.spec
        finished = [t for t in self.state.trials if t.state == "active" and t.rung == r - 1]
        kept = halving.promote({t.number: t.values.get(str(spec.rungs[r - 1])) for t in finished}, spec.keep)
        for t in finished:
            if t.number not in kept:
                t.state = "pruned"
                self.study.finish(t.number, None, "pruned")
        self.state.decided.append(r)
        self.save()
        self.observer.event(f"{self.name}: rung {r + 1} ({spec.rungs[r]} epochs) continues "
                            + ", ".join(f"t{n}" for n in kept))

    def charge(self, r: int, todo: list[Trial]) -> list[Trial]:
        """Charge rung r's sessions to the budget, best trial first; those that do not fit stop."""
        spec, state = self.spec, self.state
        epochs, previous = spec.rungs[r], spec.rungs[r - 1] if r else 0
        uncharged = [t for t in todo if t.charged < r]
        costs = [STARTUP_SECONDS + epoch_seconds(self.ws, self.trial_ws([t], epochs).store().load(t.name))
                 * (epochs - previous) for t in uncharged]
        fit = halving.affordable(costs, state.spent_seconds, state.budget_seconds)
        for t in uncharged[fit:]:
            t.state = "stopped"
            self.study.finish(t.number, None, "pruned" if t.value is not None else "failed")
        if fit < len(uncharged):
            state.state = "budget"
            self.observer.event(f"{self.name}: the budget of {spec.gpu_hours} GPU hours is spent; "
                                f"{len(uncharged) - fit} trials do not train rung {r + 1}")
        for t, cost in zip(uncharged[:fit], costs[:fit], strict=True):
            state.spent_seconds += cost
            t.charged = r
        self.save()  # charged before anything is pushed: the budget is never exceeded
        return [t for t in todo if t.state == "active"]

    def train(self, r: int, epochs: int, todo: list[Trial]) -> None:
        """Push, follow and pull rung r's trials; record each one's value."""
        run_ws = self.trial_ws(todo, epochs)
        names = [t.name for t in todo]
        options = PushOptions(wait=True, max_running=self.spec.max_running, retries=1, poll_seconds=self.poll)
        push_experiments(run_ws, names, api=self.api, options=options, observer=self.observer, sleep=self.sleep)
        try:
            pull_experiments(run_ws, names, api=self.api, observer=self.observer, sleep=self.sleep)
        except (PullError, KernelError) as e:  # those not pulled count as failed; the others go on
            self.observer.event(f"{self.name}: {e}")
        for t in todo:
            summary = read_summary(self.ws.result_dir(t.name))
            ok = summary is not None and summary.get("state") == "complete" and \
                int(summary.get("epochs_done") or 0) >= epochs
            value = _metric(summary, self.spec.metric) if ok else None
            t.values[str(epochs)] = value
            if value is None:
                t.state = "failed"
                self.study.finish(t.number, None, "failed")
                continue
            t.rung = r
            self.study.report(t.number, value, epochs)
            if r == len(self.spec.rungs) - 1:
                t.state = "complete"
                self.study.finish(t.number, value, "complete")
        self.save()


def best_trial(state: SearchState) -> Trial | None:
    done = [t for t in state.trials if t.value is not None]
    return max(done, key=lambda t: (t.rung, t.value or 0.0)) if done else None
