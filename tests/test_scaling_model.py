"""The scaling benchmark's alpha-beta ring-allreduce model against hand-computed cases, and a short real run
of the benchmark (1 and 2 MPI ranks on this machine)."""
import json
import os
import subprocess
import sys

import pytest

import _dist_helpers as h

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import scaling  # noqa: E402


def test_ring_allreduce_hand_cases():
    # 2(p-1)/p * n * beta + 2(p-1) * alpha
    assert scaling.ring_allreduce_time(1e6, 4, 1e-5, 1e-9) == pytest.approx(1.5e-3 + 6e-5)
    assert scaling.ring_allreduce_time(4e6, 2, 0.0, 1e-9) == pytest.approx(4e-3)
    assert scaling.ring_allreduce_time(8, 1024, 2e-6, 0.0) == pytest.approx(2 * 1023 * 2e-6)
    assert scaling.ring_allreduce_time(1e9, 1, 1.0, 1.0) == 0.0


def test_overlap_hand_cases():
    # two 1 MB buckets, 1 ms each at p=2 (alpha 0, 1 ns/byte); backward lasts 2 ms
    total, exposed = scaling.overlapped_comm([1e6, 1e6], [0.0, 0.001], 0.002, 2, 0.0, 1e-9)
    assert (total, exposed) == (pytest.approx(2e-3), pytest.approx(0.0))          # fully hidden
    total, exposed = scaling.overlapped_comm([1e6, 1e6], [0.0015, 0.002], 0.002, 2, 0.0, 1e-9)
    assert exposed == pytest.approx(1.5e-3)                                      # 2.5 ms, then 3.5 ms
    total, exposed = scaling.overlapped_comm([1e6, 1e6], [0.0, 0.0], 0.0005, 2, 0.0, 1e-9)
    assert exposed == pytest.approx(1.5e-3)                                      # serial channel


def test_project_hand_case():
    rows = scaling.project(0.01, 0.02, [1e6], [1.0], [2, 4], 0.0, 1e-9, batch=32)
    assert rows[0]["comm_s"] == pytest.approx(1e-3) and rows[0]["exposed_s"] == pytest.approx(1e-3)
    assert rows[0]["iteration_s"] == pytest.approx(0.031) and rows[0]["hidden"] == pytest.approx(0.0)
    assert rows[0]["efficiency"] == pytest.approx(0.03 / 0.031)
    assert rows[0]["images_per_s"] == pytest.approx(64 / 0.031)
    assert rows[1]["comm_s"] == pytest.approx(1.5e-3)                            # 2*3/4 * 1 ms
    split = scaling.project(0.01, 0.02, [5e5, 5e5], [0.25, 1.0], [2], 0.0, 1e-9, batch=32)[0]
    assert split["exposed_s"] == pytest.approx(0.5e-3) and split["hidden"] == pytest.approx(0.5)


@pytest.mark.slow
def test_benchmark_runs_here(tmp_path):
    h.tool("mpiexec")
    r = subprocess.run([sys.executable, scaling.__file__, "--max-ranks", "2", "--iters", "3", "--warmup", "1",
                        "--batch", "8", "--fit-bytes", str(1 << 20), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((tmp_path / "scaling.json").read_text())
    assert [m["ranks"] for m in result["measured"]] == [1, 2]
    assert result["measured"][1]["comm_alone_s"] > 0 and result["measured"][0]["efficiency"] == 1.0
    assert [p["ranks"] for p in result["projection"]] == [8, 16, 32, 64, 128, 256, 512, 1024]
    assert (tmp_path / "scaling.png").stat().st_size > 1000 and "| GPUs |" in (tmp_path / "scaling.md").read_text()
