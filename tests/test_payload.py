"""The payload a notebook writes: the core and the scratch engine as a package, importable on its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from kagglerun.notebook.payload import PAYLOAD_PACKAGE, core_hash, payload, payload_folders


def _write(root, engine):
    for folder in payload_folders(engine):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for module in payload(engine):
        (root / module.path).write_text(module.source)


def test_the_written_package_imports_registers_and_builds_the_scratch_engine(tmp_path):
    # A fresh interpreter with nothing but the written files on its path: kagglerun itself must not be needed.
    _write(tmp_path, "scratch")
    script = textwrap.dedent(f"""
        import sys
        sys.path[:] = [p for p in sys.path if "site-packages" in p or "lib/python" in p]
        sys.path.insert(0, {str(tmp_path)!r})
        import numpy as np
        import {PAYLOAD_PACKAGE}.core.torch_engine, {PAYLOAD_PACKAGE}.scratch.engine
        from {PAYLOAD_PACKAGE}.core.engine import ENGINES
        from {PAYLOAD_PACKAGE}.scratch.models import build_model as build_scratch_model
        from {PAYLOAD_PACKAGE}.scratch.functions import softmax_cross_entropy
        assert sorted(ENGINES) == ["scratch", "torch"], ENGINES
        model = build_scratch_model({{"name": "c5l3", "batchnorm": True, "dropout": "all", "conv_dropout": 0.3,
                                      "linear_dropout": 0.5, "width": 0.0625}}, 1, 28)
        loss = softmax_cross_entropy(model(np.zeros((2, 28, 28, 1), np.float32)), np.array([1, 2]))
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        print(sorted(m for m in sys.modules if m.startswith("kagglerun")))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = eval(out.stdout.strip().splitlines()[-1])
    assert loaded and all(m == PAYLOAD_PACKAGE or m.startswith(PAYLOAD_PACKAGE + ".") for m in loaded)


def test_the_payload_and_its_hash_follow_the_engine():
    torch_paths = {m.path for m in payload("torch")}
    scratch_paths = {m.path for m in payload("scratch")}
    assert f"{PAYLOAD_PACKAGE}/core/train.py" in torch_paths and not any("/scratch/" in p for p in torch_paths)
    assert torch_paths < scratch_paths and f"{PAYLOAD_PACKAGE}/scratch/engine.py" in scratch_paths
    assert core_hash("torch") != core_hash("scratch") and core_hash("torch") == core_hash("torch")
