"""The SLURM and PBS job scripts under a simulated scheduler: SLURM_*/PBS_* set here, and `srun`, `mpirun`,
`sbatch`, `qsub` replaced by a recording shim on PATH (which can also run the real command it was given).
Checked: arguments, resuming from the newest .solverstate, resubmission after a walltime stop, and a real
`distcaffe train` launched through the shim (including the walltime SIGTERM -> snapshot -> resubmit path)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _dist_helpers as h  # noqa: E402

SCRIPTS = h.ROOT / "scripts"
SHIM = r'''#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["SHIM_LOG"], "a") as f:
    f.write(json.dumps([name] + sys.argv[1:]) + "\n")
if name == "srun":
    with open(os.environ["SHIM_LOG"] + ".env", "a") as f:
        f.write(json.dumps({{"SRUN_CPUS_PER_TASK": os.environ.get("SRUN_CPUS_PER_TASK")}}) + "\n")
if os.environ.get("SHIM_EXEC") and name in ("srun", "mpirun"):
    args, i = sys.argv[1:], 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in ("-np", "-n", "-hostfile") else 1
    os.execvp(args[i], args[i:])
'''

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture
def sched(tmp_path):
    """(env, calls()) for running a job script with shims first on PATH."""
    shims = tmp_path / "shims"
    shims.mkdir()
    for name in ("srun", "mpirun", "sbatch", "qsub"):
        p = shims / name
        p.write_text(SHIM.format(python=sys.executable))
        p.chmod(0o755)
    distcaffe = shims / "distcaffe"           # this checkout's CLI (the scripts find their library through it)
    distcaffe.write_text('#!/bin/sh\nexec %s -m distcaffe.launcher.cli "$@"\n' % sys.executable)
    distcaffe.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PBS_", "DISTCAFFE_", "SRUN_"))}
    env.update(PATH="%s:%s" % (shims, os.environ["PATH"]), SHIM_LOG=str(log),
               DISTCAFFE_VENV=str(tmp_path / "no-venv"), PYTHONPATH=str(h.ROOT))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return env, calls


def solver_with_states(tmp_path, iters, max_iter=100):
    d = tmp_path / "job"
    d.mkdir()
    solver = d / "solver.prototxt"
    solver.write_text('net: "net.prototxt"\nmax_iter: %d\nsnapshot_prefix: "%s/snaps/lenet"\n' % (max_iter, d))
    (d / "snaps").mkdir()
    for it in iters:
        (d / "snaps" / ("lenet_iter_%d.solverstate" % it)).write_bytes(b"")
    return solver


def run(script, args, env, cwd, timeout=120):
    return subprocess.run(["bash", str(SCRIPTS / script), *map(str, args)], env=env, cwd=str(cwd),
                          capture_output=True, text=True, timeout=timeout)


def test_slurm_single_node_resumes_newest_and_resubmits(tmp_path, sched):
    env, calls = sched
    solver = solver_with_states(tmp_path, [5, 20, 15])
    env.update(SLURM_JOB_ID="42", SLURM_SUBMIT_DIR=str(tmp_path))
    r = run("slurm/train_single_node.sbatch", [solver, "-batch_semantics", "nvcaffe"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert calls() == [
        ["srun", "--kill-on-bad-exit=1", "distcaffe", "train", "-solver", str(solver), "-gpu", "all",
         "-snapshot", "auto", "-batch_semantics", "nvcaffe"],
        ["sbatch", "--export=ALL,DISTCAFFE_RESUBMIT_COUNT=1", str(SCRIPTS / "slurm/train_single_node.sbatch"),
         str(solver), "-batch_semantics", "nvcaffe"]]
    assert "stopped at iteration 20 of 100; resubmitting" in r.stderr
    assert srun_env(tmp_path) == [None]           # no --cpus-per-task asked: nothing to pass on


def srun_env(tmp_path):
    path = tmp_path / "calls.jsonl.env"
    return [json.loads(ln)["SRUN_CPUS_PER_TASK"] for ln in path.read_text().splitlines()] if path.exists() else []


def test_slurm_passes_cpus_per_task_to_srun(tmp_path, sched):
    """Since Slurm 22.05 srun does not inherit sbatch's --cpus-per-task: the script exports SRUN_CPUS_PER_TASK."""
    env, calls = sched
    solver = solver_with_states(tmp_path, [])
    env.update(SLURM_JOB_ID="5", SLURM_SUBMIT_DIR=str(tmp_path), SLURM_CPUS_PER_TASK="8")
    r = run("slurm/train_single_node.sbatch", [solver], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert srun_env(tmp_path) == ["8"]


def test_slurm_multi_node_fresh_start_no_resubmit_and_limit(tmp_path, sched):
    env, calls = sched
    solver = solver_with_states(tmp_path, [])
    env.update(SLURM_JOB_ID="7", SLURM_SUBMIT_DIR=str(tmp_path), SLURM_JOB_NUM_NODES="2",
               SLURM_JOB_NODELIST="n[1-2]", SLURM_NTASKS="8", DISTCAFFE_SRUN_MPI="pmi2")
    r = run("slurm/train_multi_node.sbatch", [solver], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert calls() == [["srun", "--kill-on-bad-exit=1", "--mpi=pmi2", "distcaffe", "train", "-solver", str(solver),
                        "-gpu", "all", "-snapshot", "auto"]]
    assert "2 nodes (n[1-2]), 8 ranks" in r.stdout
    # a stopped job at its resubmission limit is not resubmitted
    (solver.parent / "snaps" / "lenet_iter_50.solverstate").write_bytes(b"")
    env.update(DISTCAFFE_RESUBMIT_COUNT="3", DISTCAFFE_MAX_RESUBMIT="3")
    r = run("slurm/train_multi_node.sbatch", [solver], env, tmp_path)
    assert r.returncode == 0 and [c[0] for c in calls()] == ["srun", "srun"]
    assert "resubmission limit reached" in r.stderr


def test_slurm_script_needs_a_solver(tmp_path, sched):
    env, calls = sched
    r = run("slurm/train_single_node.sbatch", [], env, tmp_path)
    assert r.returncode != 0 and "usage" in r.stderr and calls() == []


def test_pbs_multi_node_hostfile_flags_and_resubmit(tmp_path, sched):
    env, calls = sched
    solver = solver_with_states(tmp_path, [30], max_iter=40)
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n1\nn1\nn2\nn2\n")
    env.update(PBS_JOBID="9.pbs", PBS_NODEFILE=str(nodefile), PBS_O_WORKDIR=str(tmp_path), SOLVER=str(solver),
               TRAIN_FLAGS="-batch_semantics bvlc", DISTCAFFE_JOB_SCRIPT="/jobs/train.pbs")
    r = run("pbs/train_multi_node.pbs", [], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert calls() == [
        ["mpirun", "-np", "4", "-hostfile", str(nodefile), "distcaffe", "train", "-solver", str(solver), "-gpu", "all",
         "-snapshot", "auto", "-batch_semantics", "bvlc"],
        ["qsub", "-v", "SOLVER=%s,TRAIN_FLAGS=-batch_semantics bvlc,DISTCAFFE_JOB_SCRIPT=/jobs/train.pbs,"
                       "DISTCAFFE_VENV=%s,DISTCAFFE_RESUBMIT_COUNT=1" % (solver, env["DISTCAFFE_VENV"]),
         "/jobs/train.pbs"]]
    assert "2 nodes, 4 ranks (job 9.pbs)" in r.stdout


def qsub_v(value):
    """The environment `qsub -v LIST` gives the next job (comma-separated, a quoted value may hold commas)."""
    out, item, quoted = {}, "", False
    for ch in value + ",":
        if ch == "'":
            quoted = not quoted
        elif ch == "," and not quoted:
            k, _, v = item.partition("=")
            out[k] = v
            item = ""
        else:
            item += ch
    return out


@pytest.mark.parametrize("script, nodes", [("pbs/train_single_node.pbs", "n1\n" * 2),
                                           ("torque/train.pbs", "n1\n" * 4 + "n2\n" * 4)])
def test_pbs_and_torque_resubmit_round_trip_keeps_every_setting(tmp_path, sched, script, nodes):
    """A CPU job (DISTCAFFE_GPU empty) with non-default knobs comes back as the same job, twice."""
    env, calls = sched
    solver = solver_with_states(tmp_path, [30], max_iter=40)
    nodefile = tmp_path / "nodes"
    nodefile.write_text(nodes)
    settings = dict(SOLVER=str(solver), TRAIN_FLAGS="-batch_semantics nvcaffe -reduce_buckets 2", DISTCAFFE_GPU="",
                    DISTCAFFE_MAX_RESUBMIT="5", DISTCAFFE_STOP_MARGIN="60", DISTCAFFE_SRUN_MPI="pmi2,x",
                    DISTCAFFE_JOB_SCRIPT="/jobs/j.pbs")
    env.update(settings, PBS_JOBID="1.srv", PBS_NODEFILE=str(nodefile), PBS_O_WORKDIR=str(tmp_path),
               PBS_WALLTIME="3600")
    for round_trip in (1, 2):
        r = run(script, [], env, tmp_path)
        assert r.returncode == 0, r.stderr
        train, qsub = calls()[-2:]
        hostfile = ["-hostfile", str(nodefile)] if script.startswith("torque") else []
        assert train == ["mpirun", "-np", str(nodes.count("\n")), *hostfile, "distcaffe", "train", "-solver",
                         str(solver), "-snapshot", "auto", "-batch_semantics", "nvcaffe", "-reduce_buckets", "2"]
        # ^ still a CPU job: no -gpu
        assert qsub[0] == "qsub" and qsub[1] == "-v" and qsub[3] == "/jobs/j.pbs"
        passed = qsub_v(qsub[2])
        assert passed == dict(settings, DISTCAFFE_VENV=env["DISTCAFFE_VENV"],
                              DISTCAFFE_RESUBMIT_COUNT=str(round_trip)), passed
        env = {k: v for k, v in env.items() if k not in passed}
        env.update(passed)                                            # what PBS gives the resubmitted job


def test_torque_script_uses_the_nodefile_slots(tmp_path, sched):
    env, calls = sched
    solver = solver_with_states(tmp_path, [])
    nodefile = tmp_path / "nodes"
    nodefile.write_text("a\na\nb\nb\n")
    env.update(PBS_JOBID="4.torque", PBS_NODEFILE=str(nodefile), PBS_O_WORKDIR=str(tmp_path), SOLVER=str(solver),
               PBS_GPUFILE=str(tmp_path / "gpus"))
    r = run("torque/train.pbs", [], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert calls() == [["mpirun", "-np", "4", "-hostfile", str(nodefile), "distcaffe", "train", "-solver",
                        str(solver), "-gpu", "all", "-snapshot", "auto"]]
    assert "2 nodes, 4 ranks (Torque job 4.torque" in r.stdout
    text = (SCRIPTS / "torque/train.pbs").read_text()
    assert "#PBS -l nodes=2:ppn=4:gpus=4" in text and "select=" not in text


@pytest.mark.slow
def test_slurm_script_launches_real_training_from_snapshot(tmp_path, sched):
    env, calls = sched
    solver = h.make_job(tmp_path, batch=4, max_iter=10, snapshot=10, name="real")
    h.single_process(solver)                       # snapshot at iteration 10
    solver.write_text(solver.read_text().replace("max_iter: 10", "max_iter: 20"))
    env.update(SLURM_JOB_ID="1", SLURM_SUBMIT_DIR=str(tmp_path), SHIM_EXEC="1", DISTCAFFE_GPU="",
               DISTCAFFE_CMD="%s -m distcaffe.launcher.cli" % sys.executable)
    r = run("slurm/train_single_node.sbatch", [solver], env, tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from %s" % (solver.parent / "snap_iter_10.solverstate") in r.stderr
    assert (solver.parent / "snap_iter_20.caffemodel").exists()
    assert [c[0] for c in calls()] == ["srun"]     # finished: no resubmission


@pytest.mark.slow
def test_pbs_walltime_sigterm_snapshots_then_resubmits(tmp_path, sched):
    env, calls = sched
    solver = h.make_job(tmp_path, batch=4, max_iter=10 ** 7, name="long")
    solver.write_text(solver.read_text().replace("display: 1", "display: 1000"))
    nodefile = tmp_path / "nodes"
    nodefile.write_text("localhost\n")
    env.update(PBS_JOBID="3.pbs", PBS_NODEFILE=str(nodefile), PBS_O_WORKDIR=str(tmp_path), SOLVER=str(solver),
               SHIM_EXEC="1", DISTCAFFE_GPU="", DISTCAFFE_CMD="%s -m distcaffe.launcher.cli" % sys.executable,
               DISTCAFFE_WALLTIME="00:00:12", DISTCAFFE_STOP_MARGIN="4")
    r = run("pbs/train_single_node.pbs", [], env, tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "walltime is near" in r.stderr
    states = list(solver.parent.glob("snap_iter_*.solverstate"))
    assert len(states) == 1
    names = [c[0] for c in calls()]
    assert names == ["mpirun", "qsub"]
    assert "DISTCAFFE_RESUBMIT_COUNT=1" in calls()[1][2]
