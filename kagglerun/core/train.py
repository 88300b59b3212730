"""The epoch loop every engine shares: resume, the output contract after each epoch, the time budget.

`main()` is what a rendered notebook calls. Part of the training core: standard library and torch only.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .contract import (
    CHECKPOINT_BEST,
    CHECKPOINT_LAST,
    CURVES_FILE,
    HISTORY_FILE,
    RESUME_MISSING,
    SETTINGS_FILE,
    SUMMARY_FILE,
    atomic_write_bytes,
    atomic_write_json,
    load_checkpoint,
    now_iso,
    plot_curves,
    save_checkpoint,
    settings_hash,
    write_history,
    write_manifest,
)
from .data import input_root, load_data
from .distributed import agree, launch, processes, refuse_in_pack
from .engine import ENGINES
from .models import workspace_model_hash
from .pack import run_pack
from .per_class import write_confusion

RUN_FILE = "run.json"  # written by the notebook's settings cell: experiment, settings, hashes


def resume_key(settings: dict[str, Any], model_hash: str = "") -> str:
    """What must match for a checkpoint to be resumed: everything that shapes training except its length
    (so raising training.epochs continues a finished run) and the Kaggle and report sections; and the
    workspace model file's content (`model_hash`), when the network is one."""
    s = json.loads(json.dumps(settings))
    if model_hash:
        s["model_file"] = model_hash
    # OneCycleLR's schedule is fixed by the run's length: a longer run is a new one
    kept = ("epochs",) if s["training"].get("lr_schedule") == "onecycle" else ()
    for key in ("epochs", "time_budget_minutes", "device", "early_stopping_patience"):
        if key not in kept:
            s["training"].pop(key, None)
    for section in ("kaggle", "report", "name", "description"):
        s.pop(section, None)
    return settings_hash(s)


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("torchvision", "numpy"):
        try:  # the installed version, without paying for an import
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        versions["cuda"] = str(torch.version.cuda)
    return versions


def find_resume_checkpoint(out: Path, key: str, log: Callable[[str], None]) -> tuple[dict[str, Any], Path] | None:
    """The checkpoint to continue from: the output folder's own, else one in the attached inputs.

    A damaged or foreign checkpoint in the output folder stops the run (nothing is overwritten);
    one in the inputs that does not match is passed over with a note."""
    own = out / CHECKPOINT_LAST
    if own.is_file():
        state = load_checkpoint(own)
        if state.get("resume_key") != key:
            raise RuntimeError(
                f"{own}: written by different settings or model file (resume key {state.get('resume_key')} != {key}); "
                "move the folder aside to start over"
            )
        return state, own
    root = input_root()
    found: list[tuple[dict[str, Any], Path]] = []
    if root.is_dir():
        for path in sorted(root.rglob(CHECKPOINT_LAST)):
            try:
                state = load_checkpoint(path)
            except RuntimeError as e:
                log(f"skipping {e}")
                continue
            if state.get("resume_key") == key:
                found.append((state, path))
            else:
                log(f"skipping {path}: other settings")
    # the furthest run, where several inputs hold one (a source kernel's older and newer outputs)
    return max(found, key=lambda f: f[0]["epoch"]) if found else None


def _restore(found: tuple[dict[str, Any], Path] | None, engine: Any, summary: dict[str, Any], out: Path,
             log: Callable[[str], None]) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """The history, best epoch and seconds so far of a resumed run (its checkpoint loaded into `engine`), or
    those of a fresh one."""
    if found is None:
        return [], {"acc": -1.0, "epoch": 0}, 0.0
    state, path = found
    engine.load_state_dict(state["engine"])
    summary["started_at"] = state.get("started_at", summary["started_at"])
    summary["resumed_from_epoch"] = state["epoch"]
    if path.parent != out:  # an attached input: this version's output carries the run on
        for carried in (CHECKPOINT_LAST, CHECKPOINT_BEST):
            if (path.parent / carried).is_file():
                atomic_write_bytes(out / carried, (path.parent / carried).read_bytes())
    log(f"resuming from {path} after epoch {state['epoch']}")
    return state["history"], state["best"], state.get("total_seconds", 0.0)


def planned_resume_missing(resume: dict[str, Any], out: Path) -> str:
    """The one line a session fails with when push planned a resume and no checkpoint is there."""
    return (f"{RESUME_MISSING} {resume.get('from')} v{resume.get('version')}, but no {CHECKPOINT_LAST} "
            f"of these settings is in {input_root()} or {out}: the source's output is missing (Kaggle refused "
            "the source, or it has no output); not training from epoch 1")


def run(settings: dict[str, Any], out_dir: str | os.PathLike[str] = ".", *, core_hash: str = "",
        log: Callable[[str], None] = print, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one experiment into `out_dir`, honouring the output contract; returns the final summary.

    With `training.devices` above one, that many processes train it together (distributed.py). `resume`
    (run.json's, when push planned one) names the run's checkpoint: without it, the run fails at once
    instead of starting over."""
    world, backend = processes(settings)
    key = resume_key(settings, workspace_model_hash(settings["model"]["name"]))
    # A planned resume without its checkpoint fails in this process, before any other is started
    if world > 1 and not (resume and find_resume_checkpoint(Path(out_dir), key, log) is None):
        return launch(train, settings, str(out_dir), core_hash, world, backend, log)
    return train(settings, out_dir, core_hash=core_hash, log=log, resume=resume)


def train(settings: dict[str, Any], out_dir: str | os.PathLike[str], *, core_hash: str = "",
          log: Callable[[str], None] = print, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """The epoch loop of `run`, in this process: alone, or as one process of a data-parallel run."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    session_start = time.time()
    t = settings["training"]
    name = settings["name"]
    summary: dict[str, Any] = {
        "experiment": name, "state": "running", "engine": settings.get("engine", "torch"),
        "epochs_done": 0, "epochs_total": t["epochs"], "best_test_acc": None, "best_epoch": None,
        "final_test_acc": None, "final_test_loss": None, "params": None, "total_seconds": 0.0,
        "device": None, "precision": None, "versions": _versions(), "settings_hash": settings_hash(settings),
        "core_hash": core_hash, "started_at": now_iso(), "updated_at": now_iso(), "resumed_from_epoch": None,
        "error": None, "selection": "val" if settings["data"].get("val_split") else "test", "best_val_acc": None,
        "test_acc_at_best": None, "stopped_early": False, "stop_reason": None, "num_classes": None,
        "class_names": None, "data_sizes": None,
    }
    atomic_write_json(out / SETTINGS_FILE, settings)
    try:
        engine_cls = ENGINES.get(summary["engine"])
        if engine_cls is None:
            raise RuntimeError(f"engine {summary['engine']!r} is not loaded (known: {sorted(ENGINES)})")
        key = resume_key(settings, workspace_model_hash(settings["model"]["name"]))
        found = find_resume_checkpoint(out, key, log)
        if found is None and resume:
            raise RuntimeError(planned_resume_missing(resume, out))
        data = load_data(settings)
        engine = engine_cls(settings, data)
        sizes = {"train": len(data.train_y), "val": len(data.val_y) if data.val_y is not None else 0,
                 "test": len(data.test_y)}
        summary.update(params=engine.param_count(), device=engine.device, precision=engine.precision,
                       num_classes=data.num_classes, class_names=list(data.class_names), data_sizes=sizes)
        val_part = f" / {sizes['val']} val" if sizes["val"] else ""
        log(f"{name}: {summary['engine']} engine, {data.name} ({sizes['train']} train{val_part} / {sizes['test']} test, "
            f"{data.num_classes} classes), {summary['params']:,} parameters, {engine.device}, {engine.precision}")
        on_val = summary["selection"] == "val"
        patience = t.get("early_stopping_patience")
        history, best, previous_seconds = _restore(found, engine, summary, out, log)
        budget = t["time_budget_minutes"] * 60
        last_epoch_seconds = 0.0
        first_epoch = len(history) + 1
        for epoch in range(first_epoch, t["epochs"] + 1):
            if patience and history and len(history) - best["epoch"] >= patience:
                summary["stopped_early"] = True
                summary["stop_reason"] = (f"early stopping: no better validation accuracy in the {patience} epochs "
                                          f"after epoch {best['epoch']} ({best['acc']:.2f} %)")
                log(summary["stop_reason"])
                break
            # Every session trains at least one epoch; after that, stop before an epoch would overrun the budget.
            # (rank 0 decides for all processes of a data-parallel run)
            if epoch > first_epoch and agree(time.time() - session_start + 1.2 * last_epoch_seconds > budget):
                summary["state"] = "stopped"
                summary["error"] = f"time budget of {t['time_budget_minutes']} minutes reached; push again to resume"
                log(summary["error"])
                break
            start = time.time()
            lr = engine.current_lr()  # what this epoch trains with (the scheduler steps during or after it)
            train_loss, train_acc = engine.train_epoch(epoch)
            test_loss, test_acc = engine.evaluate()
            row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
                   "test_acc": test_acc, "lr": lr}
            if on_val:
                row["val_loss"], row["val_acc"] = engine.evaluate("val")
            last_epoch_seconds = time.time() - start
            row["seconds"] = last_epoch_seconds
            history.append(row)
            chosen = row["val_acc"] if on_val else test_acc
            if chosen > best["acc"]:
                best = {"acc": chosen, "epoch": epoch, "test_acc": test_acc}
                save_checkpoint(out / CHECKPOINT_BEST, {"epoch": epoch, "test_acc": test_acc, "val_acc": row.get("val_acc"),
                                                        "selection": summary["selection"], "weights": engine.weights(),
                                                        "settings_hash": summary["settings_hash"]})
            total = previous_seconds + (time.time() - session_start)
            save_checkpoint(out / CHECKPOINT_LAST, {
                "epoch": epoch, "resume_key": key, "engine": engine.state_dict(), "history": history, "best": best,
                "total_seconds": total, "started_at": summary["started_at"], "settings_hash": summary["settings_hash"],
            })
            _publish(out, summary, history, best, total, name)
            val_text = f"val loss {row['val_loss']:.4f} acc {row['val_acc']:6.2f}  " if on_val else ""
            log(f"epoch {epoch:>4}/{t['epochs']}  train loss {train_loss:.4f} acc {train_acc:6.2f}  {val_text}"
                f"test loss {test_loss:.4f} acc {test_acc:6.2f}  lr {lr:.2e}  {last_epoch_seconds:6.1f}s")
        if summary["state"] == "running":
            summary["state"] = "complete"
        if best["epoch"]:  # per-class results of the best checkpoint, into the contract before its manifest
            write_confusion(out, engine, data)
        _publish(out, summary, history, best, previous_seconds + time.time() - session_start, name)
        return summary
    except BaseException as e:
        summary["state"] = "failed"
        summary["error"] = f"{type(e).__name__}: {e}"
        summary["updated_at"] = now_iso()
        atomic_write_json(out / SUMMARY_FILE, summary)
        write_manifest(out)
        raise


def _publish(out: Path, summary: dict[str, Any], history: list[dict[str, Any]], best: dict[str, Any],
             total: float, name: str) -> None:
    """Write history, curves, summary and manifest for the epochs so far (each file atomically)."""
    write_history(out / HISTORY_FILE, history)
    if history:
        plot_curves(out / CURVES_FILE, history, name)
        last = history[-1]
        summary.update(final_test_acc=last["test_acc"], final_test_loss=last["test_loss"])
    chosen = history[best["epoch"] - 1] if best["epoch"] else None
    summary.update(
        epochs_done=len(history), best_test_acc=max(r["test_acc"] for r in history) if history else None,
        best_epoch=best["epoch"] or None, total_seconds=round(total, 2), updated_at=now_iso(),
        test_acc_at_best=chosen["test_acc"] if chosen else None,
        best_val_acc=chosen.get("val_acc") if chosen else None,
    )
    atomic_write_json(out / SUMMARY_FILE, summary)
    write_manifest(out)


def main(run_file: str = RUN_FILE, out_dir: str = ".", member: int | None = None) -> dict[str, Any]:
    """Entry point of a rendered notebook: read the settings cell's file and train.

    A packed file lists several runs: each trains into out_dir/<experiment>/ (pack.py), and the result
    is {experiment: summary}; `member` trains only run number `member` of it."""
    with open(run_file) as f:
        spec = json.load(f)
    if "runs" in spec:
        refuse_in_pack(spec["runs"], run_file)
        if member is None:
            return run_pack(spec["runs"], run_file, out_dir, lambda i: main(run_file, out_dir, i))
        spec = spec["runs"][member]
        out_dir = os.path.join(out_dir, spec["experiment"])
    settings = spec["settings"]
    if settings_hash(settings) != spec["settings_hash"]:
        raise RuntimeError(f"{run_file}: settings do not match their hash; render the notebook again")
    return run(settings, out_dir, core_hash=spec.get("core_hash", ""), resume=spec.get("resume"))
