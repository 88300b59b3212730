"""Packing: one notebook trains several experiments, each into its own subfolder, at once where there are
several GPUs (Kaggle's T4 x2: its quota counts session time, not GPUs), one process per GPU.

A packed run file lists the runs: {"experiment": PACK, "runs": [run spec, ...]}; run i trains into
<out>/<its experiment>/. With fewer than two GPUs the runs go one after another in this process. A run
that fails does not stop the others; the pack raises at the end, naming each failure.
Part of the training core: standard library and torch only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .contract import SUMMARY_FILE

PACK_PROCESSES_ENV = "KAGGLERUN_PACK_PROCESSES"  # "1": a process per run even without GPUs; "0": never


def pack_gpus(runs: int) -> list[str] | None:
    """The GPU ids the runs go to, one process each (None: one after another in this process).

    torch.cuda.device_count() asks NVML where it can, so this process leaves CUDA uninitialised."""
    wanted = os.environ.get(PACK_PROCESSES_ENV, "")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if wanted == "0" or runs < 2 or (gpus < 2 and wanted != "1"):
        return None
    return [str(i) for i in range(gpus)] if gpus else [""] * runs


def _pack_child_script(engines: set[str]) -> str:
    """Python source that trains one member: `python script RUN_FILE OUT_DIR INDEX`. It imports this very
    package (kagglerun's, or the payload a notebook wrote), so a member runs exactly the parent's code."""
    core = __name__.rsplit(".", 1)[0]  # this package's core: kagglerun.core, or kagglerun_payload.core
    root = Path(__file__).resolve().parents[len(core.split("."))]
    imports = [f"{core}.torch_engine"] + ([core.rsplit(".", 1)[0] + ".scratch.engine"] if "scratch" in engines else [])
    return (f"import importlib, sys\nsys.dont_write_bytecode = True\nsys.path.insert(0, {str(root)!r})\n"
            f"for name in {imports!r}:\n    importlib.import_module(name)  # registers the engines\n"
            f"main = importlib.import_module({core + '.train'!r}).main\n"
            "if __name__ == '__main__':\n    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))\n")


def _pack_in_processes(runs: list[dict[str, Any]], run_file: str, out_dir: str, gpus: list[str],
                       log: Callable[[str], None]) -> dict[str, int]:
    """Start one process per free GPU until every run has had one; each run's output lines are logged
    with its name. Returns each run's exit code."""
    script = _pack_child_script({r["settings"].get("engine", "torch") for r in runs})
    # A folder of its own: Python puts the script's folder first on sys.path, and a shared /tmp may hold
    # files that shadow standard modules
    folder = tempfile.mkdtemp(prefix="kagglerun_pack_")
    script_path = os.path.join(folder, "kagglerun_pack_member.py")
    with open(script_path, "w") as f:
        f.write(script)
    threads = str(max(1, (os.cpu_count() or 1) // min(len(gpus), len(runs))))
    codes: dict[str, int] = {}
    free = list(gpus)
    lock = threading.Condition()

    def one(index: int, gpu: str) -> None:
        name = runs[index]["experiment"]
        env = dict(os.environ, OMP_NUM_THREADS=threads, PYTHONUNBUFFERED="1")
        if gpu:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        log(f"[{name}] starting" + (f" on GPU {gpu}" if gpu else ""))
        proc = subprocess.Popen([sys.executable, script_path, run_file, out_dir, str(index)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in proc.stdout or ():
            log(f"[{name}] {line.rstrip()}")
        codes[name] = proc.wait()
        with lock:
            free.append(gpu)
            lock.notify()

    workers = []
    try:
        for index in range(len(runs)):
            with lock:
                lock.wait_for(lambda: free)
                gpu = free.pop(0)
            worker = threading.Thread(target=one, args=(index, gpu), daemon=True)
            worker.start()
            workers.append(worker)
        for worker in workers:
            worker.join()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return codes


def run_pack(runs: list[dict[str, Any]], run_file: str, out_dir: str, run_member: Callable[[int], Any],
             log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Train every run of a pack into out_dir/<experiment>/; returns {experiment: summary}.

    `run_member(i)` trains run i in this process (used without several GPUs)."""
    import json

    names = [r["experiment"] for r in runs]
    if len(set(names)) != len(names):
        raise RuntimeError(f"{run_file}: a pack names an experiment twice: {names}")
    failures: dict[str, str] = {}
    gpus = pack_gpus(len(runs))
    if gpus is None:
        for index, name in enumerate(names):
            try:
                run_member(index)
            except Exception as e:  # the next run still gets its turn; the summary records the error
                failures[name] = f"{type(e).__name__}: {e}"
                log(f"[{name}] failed: {failures[name]}")
    else:
        for name, code in _pack_in_processes(runs, run_file, out_dir, gpus, log).items():
            if code != 0:
                failures[name] = f"exit code {code}"
    summaries = {}
    for name in names:
        path = Path(out_dir) / name / SUMMARY_FILE
        summaries[name] = json.loads(path.read_text()) if path.is_file() else {"experiment": name, "state": "failed"}
    if failures:
        raise RuntimeError("packed runs failed: " + "; ".join(f"{n}: {e}" for n, e in failures.items()))
    return summaries
