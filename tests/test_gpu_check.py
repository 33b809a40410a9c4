"""benchmarks/gpu_check.sh without a GPU: its argument handling, the refusal on a machine with no CUDA device, and
the whole check as a dry run on the CPU (toy sizes) writing the results JSON/Markdown with the issue's schema, so
the device run cannot fail on a typo."""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _dist_helpers as h  # noqa: E402

SCRIPT = os.path.join(str(h.ROOT), "benchmarks", "gpu_check.sh")
NETS = ("lenet_b64", "alexnet_b256", "resnet50_b64_float", "resnet50_b64_float16")


def _run(*args, timeout=60):
    mpiexec = h.tool("mpiexec")
    env = dict(os.environ, PYTHON=sys.executable, MPIEXEC=mpiexec, PYTHONPATH=str(h.ROOT))
    return subprocess.run(["bash", SCRIPT, *args], cwd=str(h.ROOT), env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_arguments():
    r = _run("--bogus")
    assert r.returncode == 2 and "unknown argument '--bogus'" in r.stderr
    r = _run("--help")
    assert r.returncode == 0 and "usage: benchmarks/gpu_check.sh [--dry-run]" in r.stdout


def test_refuses_without_a_gpu():
    from distcaffe import backend
    if backend.gpu_available():
        pytest.skip("this machine has a GPU")
    h.need_module("torch", "ray-cpu")
    r = _run("--out", "/nonexistent/never-written")
    assert r.returncode == 2 and "cupy sees no CUDA device here; use --dry-run" in r.stderr


@pytest.mark.slow
def test_dry_run_writes_the_results(tmp_path):
    h.need_module("torch", "ray-cpu")
    out = tmp_path / "gpu"
    r = _run("--dry-run", "--out", str(out), timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    verdict = r.stdout.strip().splitlines()[-1]
    assert verdict.startswith("gpu-check DRY RUN (CPU): tests PASS; resnet50_b64_float16 ratio"), verdict
    res = json.loads((tmp_path / "gpu.json").read_text())
    for name in NETS:
        row = res[name]
        assert row["distcaffe_img_s"] > 0 and row["torch_img_s"] > 0, (name, row)
        assert row["ratio"] == pytest.approx(row["distcaffe_img_s"] / row["torch_img_s"])
    assert 0.0 <= res["allreduce_hidden_fraction"] <= 1.0
    assert res["meta"]["dry_run"] and res["meta"]["verdict"] == verdict
    md = (tmp_path / "gpu.md").read_text()
    assert verdict in md and all("| %s |" % name in md for name in NETS)
