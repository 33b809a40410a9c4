"""Launcher environment detection (OpenMPI, MPICH/Hydra, Intel MPI, PMIx, SLURM srun vs. the batch script, PBS),
-gpu parsing, local rank -> device, and the decision to go distributed; plus local spawning (slow, real mpiexec)."""
import os
import sys

import pytest

from distcaffe.errors import CaffeError
from distcaffe.launcher import env as E
from distcaffe.launcher import distributed, spawn

sys.path.insert(0, os.path.dirname(__file__))
import _dist_helpers as h  # noqa: E402


@pytest.mark.parametrize("environ, expect", [
    ({}, ("single", 0, 1, 0, 1)),
    ({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
      "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, ("openmpi", 5, 8, 1, 4)),
    ({"PMI_RANK": "3", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}, ("mpich", 3, 4, 1, 2)),
    ({"PMI_RANK": "2", "PMI_SIZE": "48", "MPI_LOCALRANKID": "2"}, ("mpich", 2, 48, 2, 3)),     # Intel MPI
    ({"PMIX_RANK": "6", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "2", "SLURM_NODEID": "1",
      "SLURM_STEP_TASKS_PER_NODE": "4(x2)"}, ("pmix", 6, 8, 2, 4)),
    ({"SLURM_PROCID": "9", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "12", "SLURM_NTASKS": "16",
      "SLURM_LOCALID": "1", "SLURM_NODEID": "2", "SLURM_STEP_TASKS_PER_NODE": "4(x2),4"}, ("slurm", 9, 12, 1, 4)),
    # the sbatch script itself: SLURM_PROCID=0 and SLURM_NTASKS, but no step -> one process
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "16", "SLURM_JOB_ID": "77"}, ("single", 0, 1, 0, 1)),
])
def test_detect(environ, expect):
    p = E.detect(environ)
    assert (p.launcher, p.rank, p.size, p.local_rank, p.local_size) == expect


def test_batch_context(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n2\nn1\nn1\nn2\n")
    p = E.detect({"PBS_JOBID": "12.server", "PBS_NODEFILE": str(nodefile), "PMI_RANK": "0", "PMI_SIZE": "4"})
    assert (p.scheduler, p.job_id, p.nodes, p.size) == ("pbs", "12.server", ["n1", "n2"], 4)
    p = E.detect({"SLURM_JOB_ID": "5", "SLURM_JOB_NODELIST": "gpu[01-02]"})
    assert (p.scheduler, p.job_id, p.nodes) == ("slurm", "5", ["gpu[01-02]"])
    with pytest.raises(CaffeError, match="PBS_NODEFILE"):
        E.detect({"PBS_NODEFILE": str(tmp_path / "missing")})


def test_detect_errors():
    with pytest.raises(CaffeError, match="OMPI_COMM_WORLD_RANK"):
        E.detect({"OMPI_COMM_WORLD_RANK": "x"})
    with pytest.raises(CaffeError, match="rank 4 of 4"):
        E.detect({"PMI_RANK": "4", "PMI_SIZE": "4"})
    with pytest.raises(CaffeError, match="tasks-per-node"):
        E.slurm_tasks_on_node("4(x", 0)
    assert E.slurm_tasks_on_node("2(x3),1", 3) == 1


def test_gpu_flag_and_device_mapping():
    assert E.parse_gpu_flag("all", 4) == [0, 1, 2, 3]
    assert E.parse_gpu_flag("2,0", 4) == [2, 0]
    assert E.parse_gpu_flag("", 4) == [] and E.parse_gpu_flag(None, 0) == []
    for bad, msg in (("all", "no CUDA device"), ("1,1", "distinct"), ("a", "comma-separated"), ("5", "not present")):
        with pytest.raises(CaffeError, match=msg):
            E.parse_gpu_flag(bad, 0 if bad == "all" else 4)
    four = E.Placement(rank=5, size=8, local_rank=1, local_size=4)
    assert E.device_for_rank([0, 1, 2, 3], four) == 1
    assert E.device_for_rank([2, 3, 0, 1], four) == 3
    assert E.device_for_rank([0], four) == 0          # srun --gpus-per-task=1: each rank sees its own GPU as 0
    assert E.device_for_rank([], four) is None
    with pytest.raises(CaffeError, match="4 ranks on this node but only 2 GPUs"):
        E.device_for_rank([0, 1], four)


def test_wanted():
    assert not distributed.wanted({"solver": "s"}, {})
    assert distributed.wanted({"cpu-workers": 2}, {})
    assert distributed.wanted({"ray": "auto"}, {})
    assert distributed.wanted({}, {"PMI_RANK": "0", "PMI_SIZE": "2"})
    with pytest.raises(CaffeError, match="batch_semantics"):
        distributed.wanted({"batch_semantics": "caffe2"}, {})


def test_spawn_without_mpiexec_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(CaffeError, match="needs mpiexec"):
        spawn.mpiexec_command(2, ["-solver", "s"])


def test_spawn_finds_mpiexec_next_to_the_interpreter(monkeypatch, tmp_path):
    """An unactivated venv (`.venv/bin/distcaffe train -gpu all`): mpiexec sits beside python, not on PATH."""
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert spawn.mpiexec_command(2, ["-solver", "s"])[:3] == [str(fake), "-n", "2"]


@pytest.mark.slow
def test_cpu_workers_spawn_two_local_ranks(tmp_path):
    import subprocess
    solver = h.make_job(tmp_path, batch=4, name="spawned")
    r = subprocess.run([sys.executable, "-m", "distcaffe.launcher.distributed", "-solver", str(solver), "--cpu-workers", "2"],
                       cwd=str(h.ROOT), env=dict(os.environ, PYTHONPATH=str(h.ROOT)), capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Starting 2 local ranks" in r.stderr and "MPI world of 2 ranks" in r.stderr
    assert (solver.parent / "snap_iter_10.caffemodel").exists()


def test_ray_auto_never_joins_another_users_cluster(tmp_path, monkeypatch):
    """`-ray auto` with a live cluster of another uid on this machine starts its own and says why; the joined
    cluster is named."""
    import socket
    import types

    from distcaffe.launcher import ray_launch
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    (tmp_path / "ray").mkdir()
    address_file = tmp_path / "ray" / "ray_current_cluster"
    address_file.write_text("127.0.0.1:%d" % server.getsockname()[1])
    monkeypatch.setattr(ray_launch.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    calls = []
    fake = types.SimpleNamespace(
        is_initialized=lambda: False, init=lambda **kw: calls.append(kw["address"]),
        cluster_resources=lambda: {"CPU": 2.0}, nodes=lambda: [{"Alive": True}],
        get_runtime_context=lambda: types.SimpleNamespace(gcs_address="127.0.0.1:1"))
    monkeypatch.setitem(sys.modules, "ray", fake)
    try:
        assert ray_launch._running_cluster() == (address_file.read_text(), os.getuid())
        assert ray_launch._connect("auto") is False and calls == [address_file.read_text()]    # our own: joined
        os.chown(address_file, os.getuid() + 4242, -1)
        assert ray_launch._connect("auto") is True and calls[-1] == "local"                   # a stranger's: not
    finally:
        server.close()
