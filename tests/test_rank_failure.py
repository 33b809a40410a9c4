"""A launch whose MPI world does not match the scheduler's rank count stops at start-up with one line naming
both sizes; an exception on one rank of a real `mpiexec` job prints that rank's traceback and a one-line summary
naming rank, host, pid and exit code, and ends the job."""
import os
import re
import socket
import subprocess
import sys

import pytest

import _dist_helpers as h

CLI = [sys.executable, "-m", "distcaffe.launcher.cli", "train"]
BOOM = '''
import os


class Boom:
    """Passes data through; raises on its third forward pass, on MPI rank 1 only (every rank builds the same net,
    so the start-up digest check passes)."""
    calls = 0
    def setup(self, bottom, top): pass
    def reshape(self, bottom, top): top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        Boom.calls += 1
        if Boom.calls == 3 and os.environ.get("PMI_RANK") == "1":
            raise RuntimeError("boom in a user layer")
        top[0].data[...] = bottom[0].data
    def backward(self, top, propagate_down, bottom): bottom[0].diff[...] = top[0].diff
'''


def test_scheduler_and_mpi_world_sizes_must_agree(tmp_path):
    """srun without a matching PMI: SLURM says 2 ranks, but MPI starts a one-rank world in each task."""
    h.need_module("mpi4py", "mpi")
    solver = h.make_job(tmp_path, batch=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "SLURM_", "HYDRA"))}
    env.update(PYTHONPATH=str(h.ROOT), SLURM_JOB_ID="9", SLURM_PROCID="1", SLURM_STEP_ID="0", SLURM_NTASKS="2",
               SLURM_LOCALID="1")
    r = subprocess.run(CLI + ["-solver", str(solver)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("distcaffe: error:")]
    assert len(errors) == 1 and "the slurm environment says 2 ranks but the MPI world has 1" in errors[0], r.stderr
    assert "srun --mpi=" in errors[0] and not (solver.parent / "snap_iter_10.caffemodel").exists()


@pytest.mark.slow
def test_exception_on_one_rank_is_reported_and_ends_the_job(tmp_path):
    mpiexec = h.tool("mpiexec")
    (tmp_path / "boom_layer.py").write_text(BOOM)
    bad = h.make_job(tmp_path, batch=4, max_iter=10 ** 6, name="bad")
    net = (bad.parent / "net.prototxt").read_text().replace(
        'layer { name: "ip1"', 'layer { name: "boom" type: "Python" bottom: "data" top: "data" '
                               'python_param { module: "boom_layer" layer: "Boom" } }\nlayer { name: "ip1"')
    (bad.parent / "net.prototxt").write_text(net)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(h.ROOT), str(tmp_path))))
    r = subprocess.run([mpiexec, "-n", "2", *CLI, "-solver", str(bad)],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert "Traceback (most recent call last)" in out and "RuntimeError: boom in a user layer" in out, out[-3000:]
    m = re.search(r"^distcaffe: error: rank 1 \(pid (\d+) on (\S+)\): RuntimeError: boom in a user layer "
                  r"\(exit code 1\)$", out, re.M)
    assert m and m.group(2) == socket.gethostname(), out[-3000:]
