"""A real local Ray cluster with 2 CPU actors (GLOO through torch): the same weights as single-process training
with the doubled batch; a SIGKILLed actor ends the job non-zero, named, with no actor left."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _dist_helpers as h  # noqa: E402

ray = h.need_module("ray", "ray-cpu")
h.need_module("torch", "ray-cpu")
pytestmark = pytest.mark.slow


def ray_train(solver, *extra):
    cmd = [sys.executable, "-m", "distcaffe.launcher.distributed", "-solver", str(solver), "--ray", "auto", "--cpu-workers",
           "2", *extra]
    env = dict(os.environ, PYTHONPATH=str(h.ROOT), RAY_ADDRESS="")
    return subprocess.Popen(cmd, cwd=str(h.ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_two_ray_cpu_actors_equal_single_process(tmp_path):
    dist = h.make_job(tmp_path, batch=4, name="dist")
    single = h.make_job(tmp_path, batch=8, name="single")
    proc = ray_train(dist)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    assert re.search(r"Ray job of 2 ranks \(PACK\)", out) and "Overall performance:" in out
    assert "Joined Ray cluster" in out and "a local cluster started for this job" in out, out[-3000:]
    # piped output: the ranks' glog lines come through as they are, no "(RayRank pid=...)" and no ANSI colours
    ranks = [ln for ln in out.splitlines() if "solver.cpp" in ln or "worker.cpp" in ln]
    assert ranks and all(re.match(r"^[IWE]\d{4} ", ln) and "\x1b[" not in ln for ln in ranks), out[-3000:]
    assert not re.search(r"\(RayRank pid=\d+", out), out[-3000:]
    assert re.search(r"^I\d{4} [\d:.]+ +\d+ solver\.cpp:\d+\] Iteration 5 \(", out, re.M), out[-3000:]
    h.single_process(single)
    wa, wb = h.weights(dist.parent / "snap_iter_10.caffemodel"), h.weights(single.parent / "snap_iter_10.caffemodel")
    for name in wa:
        for x, y in zip(wa[name], wb[name]):
            np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


def test_killed_ray_actor_ends_job_named(tmp_path):
    solver = h.make_job(tmp_path, batch=4, max_iter=10 ** 6, name="long")
    solver.write_text(solver.read_text().replace("display: 1", "display: 500"))
    rc, out, elapsed, pids = h.kill_rank1_when_training(
        ray_train(solver), r"rank 0 \(pid (\d+) on node \w+\), rank 1 \(pid (\d+) on", "Iteration 500,",
        start_timeout=180, exit_timeout=90)
    assert rc != 0 and elapsed < 60, out[-3000:]
    assert re.search(r"rank 1 \(pid %d on node \w+\) is lost" % pids[1], out), out[-3000:]
    time.sleep(1)
    assert not psutil.pid_exists(pids[0]) or psutil.Process(pids[0]).status() == psutil.STATUS_ZOMBIE


def test_wrong_ray_address_is_one_line(tmp_path):
    solver = h.make_job(tmp_path, batch=4, name="nowhere")
    r = subprocess.run([sys.executable, "-m", "distcaffe.launcher.cli", "train", "-solver", str(solver), "-ray",
                        "127.0.0.1:9", "-cpu_workers", "2"], env=dict(os.environ, PYTHONPATH=str(h.ROOT)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "distcaffe: error: -ray 127.0.0.1:9: no Ray cluster answers at 127.0.0.1:9" in r.stderr


def test_ray_job_submit_to_a_running_cluster(tmp_path):
    """`ray start --head` + `ray job submit --working-dir JOBDIR -- distcaffe train -ray auto`: the files travel
    with the job, the driver joins the job's cluster (RAY_ADDRESS) and says so."""
    ray_cli = h.tool("ray", extra="ray")
    solver = h.make_job(tmp_path, batch=4, name="submitted")
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_ADDRESS="")
    # our own head in its own session and temp dir, stopped by signalling that session only (never `ray stop`,
    # which would stop every Ray cluster on this machine); its address file stays in its temp dir
    temp = tempfile.mkdtemp(prefix="dcray", dir="/tmp")
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", "--num-cpus", "2", "--port", "6391",
                             "--dashboard-port", "8291", "--include-dashboard", "true", "--temp-dir", temp], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        runtime_env = '{"env_vars": {"PYTHONPATH": "%s"}}' % h.ROOT
        entry = [sys.executable, "-m", "distcaffe.launcher.cli", "train", "-solver", "solver.prototxt", "-ray", "auto",
                 "-cpu_workers", "2"]
        deadline = time.time() + 120
        while True:
            r = subprocess.run([ray_cli, "job", "submit", "--address", "http://127.0.0.1:8291", "--working-dir",
                                str(solver.parent), "--runtime-env-json", runtime_env, "--", *entry], env=env,
                               capture_output=True, text=True, timeout=300)
            out = r.stdout + r.stderr
            if r.returncode == 0 or time.time() > deadline or "Failed to connect" not in out and \
                    "Connection refused" not in out and "Cannot connect" not in out:
                break
            time.sleep(2)
        assert r.returncode == 0, out[-3000:]
        assert "succeeded" in out and "Ray job of 2 ranks" in out
        assert "Joined Ray cluster" in out and "RAY_ADDRESS" in out, out[-3000:]
        assert (solver.parent / "snap_iter_10.caffemodel").exists()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
