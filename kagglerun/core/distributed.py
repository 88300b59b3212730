"""Data-parallel training of one experiment: `training.devices` processes, one per GPU (NCCL), or on the CPU
(gloo) when `training.device = "cpu"`, each a replica under DistributedDataParallel.

The rule: the effective batch is the experiment's `training.batch_size`. Every process draws the same epoch
order from the epoch's generator; each global batch order[k*B:(k+1)*B] is cut into `devices` consecutive,
near-equal parts, and process r trains on part r, so each takes B / devices images a step (B must divide;
the last, shorter batch is cut as evenly as it goes). Its mean loss is weighted by its share of the global
batch, so that DDP's average of the processes' gradients is exactly the gradient of the global batch's mean
loss: the same step one process takes on the same batch, at the same learning rate (the LR is not scaled).
What differs from one process: BatchNorm normalises each part by its own statistics (rank 0's running
statistics are kept), and each process augments its part with its own generator, seeded from the seed, the
epoch and its rank, and draws its own dropout masks, so a run is reproducible from its seed and its number
of processes. A last global batch of fewer images than processes is left out.

Only rank 0 writes: the others call `contract.silence_writes()`, then run the very same epoch loop, so
every collective operation is met by all. Decisions that could differ between processes (the time budget)
are rank 0's, broadcast (`agree`). Resume is as for one process: every rank loads rank 0's checkpoint, which
holds each rank's random-number state. Part of the training core: standard library and torch only.
"""

from __future__ import annotations

import importlib
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .contract import SUMMARY_FILE, atomic_write_json, now_iso, read_summary, silence_writes, write_manifest
from .engine import ENGINES, epoch_seed


@dataclass(frozen=True)
class Group:
    """This process's place in a data-parallel run."""

    rank: int
    world: int
    backend: str  # "nccl" or "gloo"
    device: torch.device

    def rank_seed(self, seed: int) -> int:
        """A seed of this rank's own, derived from `seed` (rank 0's differs from `seed` too)."""
        return (seed * 1_000_033 + 7919 * (self.rank + 1)) % (2**63 - 1)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model under DistributedDataParallel: backward averages the gradients over the processes."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard_epoch(self, order: torch.Tensor, batch_size: int, seed: int, epoch: int
                    ) -> tuple[torch.Tensor, list[tuple[int, int]], list[float], torch.Generator]:
        """This rank's part of every global batch of `order`, in step order; each step's (start, stop) in it;
        the weight of each step's mean loss; and this rank's augmentation generator for the epoch."""
        n, parts, bounds, weights, start = order.shape[0], [], [], [], 0
        for first in range(0, n, batch_size):
            m = min(batch_size, n - first)
            if m < self.world:
                break  # too few images left for every process to have one
            lo, hi = first + m * self.rank // self.world, first + m * (self.rank + 1) // self.world
            parts.append(torch.arange(lo, hi))
            bounds.append((start, start + hi - lo))
            weights.append((hi - lo) * self.world / m)
            start += hi - lo
        positions = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
        mine = order.index_select(0, positions.to(order.device))
        g = torch.Generator(device=order.device).manual_seed(self.rank_seed(epoch_seed(seed, epoch)))
        return mine, bounds, weights, g

    def part(self, n: int) -> tuple[int, int]:
        """This rank's consecutive share of n items (for evaluation)."""
        return n * self.rank // self.world, n * (self.rank + 1) // self.world

    def sum_(self, *tensors: torch.Tensor) -> None:
        """Sum each tensor over the processes, in place."""
        for t in tensors:
            dist.all_reduce(t)

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm's running statistics), as the checkpoint holds them."""
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)

    def rng_state(self) -> dict[str, Any]:
        """Every rank's random-number state (CPU, and its own GPU's), gathered: what rank 0's checkpoint holds."""
        mine = (torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None)
        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, mine)
        return {"rank_rng": states}

    def load_rng_state(self, state: dict[str, Any]) -> None:
        cpu, cuda = state["rank_rng"][self.rank]
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, self.device)


def current_group() -> Group | None:
    """The data-parallel run this process belongs to, or None when it trains alone."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    backend = str(dist.get_backend())
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return Group(dist.get_rank(), dist.get_world_size(), backend, device)


def agree(flag: bool) -> bool:
    """Rank 0's value of `flag`, on every rank (the flag itself when training alone)."""
    group = current_group()
    if group is None:
        return flag
    t = torch.tensor([int(flag)], device=group.device)
    dist.broadcast(t, 0)
    return bool(t.item())


def processes(settings: dict[str, Any]) -> tuple[int, str]:
    """How many processes train the experiment, and their backend ("" for one); a clear error where this
    machine cannot.

    `devices = "all"` is every GPU there is (one: the single-process path). With `device = "cpu"`, N processes
    train on the CPU with gloo (what the tests use); otherwise N needs N GPUs."""
    t = settings["training"]
    wanted = t.get("devices", 1)
    if wanted == 1:
        return 1, ""
    if settings.get("engine", "torch") != "torch":
        raise RuntimeError(f"training.devices = {wanted!r}: only the torch engine trains on several devices")
    if t["device"] == "cpu":
        n, backend = (1 if wanted == "all" else int(wanted)), "gloo"
    else:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        n, backend = (max(gpus, 1) if wanted == "all" else int(wanted)), "nccl"
        if n > gpus and n > 1:
            raise RuntimeError(f"training.devices = {wanted!r}: {n} GPUs asked for, {gpus} on this machine; set "
                               f"training.devices = 1, or training.device = \"cpu\" for {n} gloo processes on the CPU")
    if t["batch_size"] % n:
        raise RuntimeError(f"training.batch_size = {t['batch_size']} is not divisible by training.devices = {n}: "
                           "each process takes batch_size / devices images a step")
    return n, backend


def refuse_in_pack(runs: list[dict[str, Any]], run_file: str) -> None:
    """Packs give each member one GPU: a member asking for several is refused."""
    for r in runs:
        devices = r["settings"]["training"].get("devices", 1)
        if devices != 1:
            raise RuntimeError(f"{run_file}: {r['experiment']}: training.devices = {devices!r} cannot be packed "
                               "(a pack gives each member one GPU); train it alone")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _silent(_: str) -> None:
    pass


def worker_main(job_file: str, rank: int) -> None:
    """One process of the run (what each child runs): join the group, then train with the job's target
    (train.train: the epoch loop), writing only on rank 0. A failure leaves its one line in error-<rank>.txt
    beside the job file."""
    with open(job_file, "rb") as f:
        job = pickle.load(f)
    failed_at = None
    try:
        for name in job["engines"]:
            importlib.import_module(name)  # registers the engines in this fresh interpreter
        if job["backend"] == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(job["backend"], init_method=f"tcp://127.0.0.1:{job['port']}", rank=rank,
                                world_size=job["world"])
        try:
            if rank != 0:
                silence_writes()
            job["target"](job["settings"], job["out_dir"], core_hash=job["core_hash"],
                          log=print if rank == 0 else _silent)
        except BaseException:
            # when, before leaving the group breaks the others' connections: the first failure is the one told
            failed_at = time.time()
            raise
        finally:
            dist.destroy_process_group()
    except BaseException as e:
        traceback.print_exc()
        line = f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__
        with open(os.path.join(os.path.dirname(job_file), f"error-{rank}.txt"), "w") as f:
            f.write(f"{failed_at or time.time()}\n{line}")
        raise SystemExit(1) from None


def _child_code() -> str:
    """`python -c` source that runs one process of the run from this very package (kagglerun's, or the
    payload a notebook wrote): `python -c CODE JOB_FILE RANK`."""
    core = __name__.rsplit(".", 1)[0]
    root = Path(__file__).resolve().parents[len(core.split("."))]
    return (f"import importlib, sys\nsys.dont_write_bytecode = True\nsys.path.insert(0, {str(root)!r})\n"
            f"importlib.import_module({__name__!r}).worker_main(sys.argv[1], int(sys.argv[2]))\n")


def _engine_modules(settings: dict[str, Any]) -> list[str]:
    """The module that registers the run's engine, for the fresh processes to import."""
    engine = ENGINES.get(settings.get("engine", "torch"))
    return [engine.__module__] if engine is not None else sorted({cls.__module__ for cls in ENGINES.values()})


def launch(target: Callable[..., Any], settings: dict[str, Any], out_dir: str, core_hash: str, world: int,
           backend: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Train with `world` fresh processes (not forked: a notebook's kernel cannot be forked safely, and
    each must set up its own GPU) and return the summary rank 0 wrote. Rank 0's output is this run's log;
    the others' (warnings, a traceback) is logged with their rank. If one fails, the others are stopped,
    the summary says failed and the error is its one line."""
    log(f"{settings['name']}: data-parallel, {world} processes ({backend}), "
        f"{settings['training']['batch_size'] // world} images each a step")
    folder = tempfile.mkdtemp(prefix="kagglerun_ddp_")
    job_file = os.path.join(folder, "job.pkl")
    with open(job_file, "wb") as f:
        pickle.dump({"target": target, "world": world, "backend": backend, "port": _free_port(),
                     # only the module of the engine this run trains with: another registered one may not import there
                     "engines": _engine_modules(settings), "settings": settings,
                     "out_dir": str(out_dir), "core_hash": core_hash}, f)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if backend == "gloo":  # the CPU's cores shared between the processes
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // world))
    procs: list[subprocess.Popen[str]] = []
    readers = []
    try:
        for rank in range(world):
            procs.append(subprocess.Popen([sys.executable, "-c", _child_code(), job_file, str(rank)], env=env,
                                          text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
            prefix = "" if rank == 0 else f"[rank {rank}] "
            reader = threading.Thread(target=_relay, args=(procs[-1], prefix, log), daemon=True)
            reader.start()
            readers.append(reader)
        failed = _wait(procs)
        for reader in readers:
            reader.join()
        if failed is not None:
            raise RuntimeError(_failed(out_dir, _first_error(folder, failed, procs[failed].returncode)))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
    summary = read_summary(out_dir)
    if summary is None:
        raise RuntimeError(f"{out_dir}: the data-parallel run left no {SUMMARY_FILE}")
    return summary


def _first_error(folder: str, failed: int, code: int) -> str:
    """The one line of the rank that failed first, from the error files; else the exit code of `failed`."""
    errors = []
    for path in Path(folder).glob("error-*.txt"):
        when, _, line = path.read_text().partition("\n")
        errors.append((float(when), f"rank {path.stem.split('-')[1]}: {line}"))
    return min(errors)[1] if errors else f"rank {failed}: exit code {code}"


def _relay(proc: subprocess.Popen[str], prefix: str, log: Callable[[str], None]) -> None:
    for line in proc.stdout or ():
        log(prefix + line.rstrip())


def _wait(procs: list[subprocess.Popen[str]]) -> int | None:
    """Wait for every process to end; at the first that fails, stop the others. Returns its rank, or None."""
    while True:
        codes = [p.poll() for p in procs]
        failed = next((rank for rank, code in enumerate(codes) if code not in (None, 0)), None)
        if failed is not None:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                proc.wait()
            return failed
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.2)


def _failed(out_dir: str, error: str) -> str:
    """Record a failure that rank 0 may not have written (it was stopped while another rank failed)."""
    summary = read_summary(out_dir)
    if summary is not None and summary.get("state") == "running":
        summary.update(state="failed", error=error, updated_at=now_iso())
        atomic_write_json(os.path.join(out_dir, SUMMARY_FILE), summary)
        write_manifest(out_dir)
    return error
