"""BLAS/OpenMP pools are sized (threadpoolctl) to the CPUs a process may really use — affinity, cgroup quota,
SLURM cpus-per-task, its share of the node, the idle CPUs — for every launch, never over what the user set."""
import json
import os
import subprocess
import sys

from distcaffe.launcher import threads as T

MPICH_2 = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}
CORES = len(os.sched_getaffinity(0))


def sized(env, quota=None, load=0.0):
    return T.usable_cpus(env, cgroup_quota=lambda: quota, loadavg=lambda: (load, 0.0, 0.0))


def test_single_process_gets_the_idle_cpus():
    assert sized({})[0] == CORES
    assert sized({}, load=CORES + 5.0) == (1, "affinity %d, load average %.1f leaves 1 idle" % (CORES, CORES + 5.0))


def test_ranks_split_the_node_and_quota_and_slurm_bound_it():
    assert sized(MPICH_2)[0] == max(1, CORES // 2)
    assert sized({}, quota=0.5) == (1, "affinity %d, cgroup quota 0.5" % CORES)
    n, why = sized(dict(MPICH_2, SLURM_CPUS_PER_TASK="1"))
    assert n == 1 and "SLURM cpus-per-task 1" in why


def test_cgroup_quota_files(tmp_path):
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "cpu.max").write_text("150000 100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/job\n")
    assert T._cgroup_quota(str(tmp_path), str(proc)) == 1.5
    (tmp_path / "job" / "cpu.max").write_text("max 100000\n")
    assert T._cgroup_quota(str(tmp_path), str(proc)) is None
    v1 = tmp_path / "cpu,cpuacct" / "slurm"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("400000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    proc.write_text("4:cpu,cpuacct:/slurm\n")
    assert T._cgroup_quota(str(tmp_path), str(proc)) == 4.0


def pools_after_cli(extra_env, code="from distcaffe.launcher import threads; print(threads.size_thread_pools())"):
    code = ("import json, threadpoolctl; %s; import numpy; print(json.dumps([p['num_threads'] for p in "
            "threadpoolctl.threadpool_info()]))" % code)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env.update(extra_env)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_user_setting_wins():
    line, counts = pools_after_cli({"OPENBLAS_NUM_THREADS": "1", **MPICH_2})
    assert line == "None" and set(json.loads(counts)) == {1}


def test_a_rank_limits_its_loaded_blas_pool():
    line, counts = pools_after_cli(MPICH_2)
    n = int(line.split()[2])
    assert n <= max(1, CORES // 2) and set(json.loads(counts)) == {n}, (line, counts)


def _timeout_seen(code, env):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"} | env
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_openblas_idle_spin_is_shortened_before_numpy_loads():
    """`import distcaffe` before numpy sets OPENBLAS_THREAD_TIMEOUT (the split loops need the cores OpenBLAS's
    idle threads would spin on); a site's own value wins, and after numpy it is too late and left alone."""
    read = "import os; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    assert _timeout_seen("import distcaffe; " + read, {}) == "20"
    assert _timeout_seen("import distcaffe.launcher.cli; " + read, {}) == "20"
    assert _timeout_seen("import distcaffe; " + read, {"OPENBLAS_THREAD_TIMEOUT": "7"}) == "7"
    assert _timeout_seen("import numpy, distcaffe; " + read, {}) == "None"
