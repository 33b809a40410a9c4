"""Size the BLAS/OpenMP thread pools of every `distcaffe` process (threadpoolctl) to the CPUs it may really use:
the affinity mask, the cgroup CPU quota, SLURM's --cpus-per-task, this rank's share of the node, and what the
load average leaves idle. Pool sizes the user set (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS) win.

Measured (benchmarks/RESULTS.md): two ranks on two cores with 2 threads each ran LeNet 6x slower than with one
thread each, and a lone `distcaffe train` on a busy 2-core machine ran 8x slower with 2 threads than with 1.
"""
import math
import os

from distcaffe.launcher import env as E

POOLS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _read_quota(kind, path):
    """CPUs of one cgroup's quota file(s): float, None (no limit) or raises OSError/ValueError."""
    if kind == "v2":
        quota, period = open(os.path.join(path, "cpu.max")).read().split()[:2]
    else:
        quota = open(os.path.join(path, "cpu.cfs_quota_us")).read().strip()
        period = open(os.path.join(path, "cpu.cfs_period_us")).read().strip()
    return None if quota in ("max", "-1") else int(quota) / int(period)


def _cgroup_quota(root="/sys/fs/cgroup", proc_cgroup="/proc/self/cgroup"):
    """CPUs allowed by this process's cgroup CPU quota (v2 cpu.max, v1 cpu.cfs_quota_us / cfs_period_us),
    or None when there is none. Inside a container the cgroup's own files are at the mount's root."""
    candidates = []
    try:
        for line in open(proc_cgroup).read().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                candidates.append(("v2", os.path.join(root, path.lstrip("/"))))
            elif "cpu" in controllers.split(","):
                candidates.append(("v1", os.path.join(root, controllers, path.lstrip("/"))))
                candidates.append(("v1", os.path.join(root, "cpu", path.lstrip("/"))))
    except (OSError, ValueError):
        pass
    candidates += [("v2", root), ("v1", os.path.join(root, "cpu"))]
    for kind, path in candidates:
        try:
            return _read_quota(kind, path)
        except (OSError, ValueError):
            continue
    return None


def usable_cpus(environ=None, cgroup_quota=_cgroup_quota, loadavg=os.getloadavg):
    """(threads for this process, a one-line account of how they were counted)."""
    environ = os.environ if environ is None else environ
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cpus, why = affinity, ["affinity %d" % affinity]
    quota = cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
        why.append("cgroup quota %.3g" % quota)
    try:
        local = E.detect(environ).local_size
    except Exception:  # a malformed launcher environment is reported later, by the command itself
        local = 1
    per_task = environ.get("SRUN_CPUS_PER_TASK") or environ.get("SLURM_CPUS_PER_TASK")
    if per_task and per_task.isdigit() and int(per_task) > 0:      # SLURM's own per-task share
        share = min(cpus, int(per_task))
        why.append("SLURM cpus-per-task %s" % per_task)
    else:
        share = max(1, cpus // local)
        if local > 1:
            why.append("%d ranks on this node" % local)
    try:
        busy = loadavg()[0]
    except OSError:
        busy = 0.0
    idle = max(1, cpus - math.floor(busy))
    if idle < share:
        why.append("load average %.1f leaves %d idle" % (busy, idle))
    return max(1, min(share, idle)), ", ".join(why)


def size_thread_pools(environ=None):
    """Limit the loaded BLAS/OpenMP pools to usable_cpus(); returns a line for the log (None: the user's
    *_NUM_THREADS setting is kept)."""
    environ = os.environ if environ is None else environ
    user = [name for name in POOLS if environ.get(name)]
    if user:
        return None
    n, why = usable_cpus(environ)
    import numpy  # noqa: F401  (loads numpy's BLAS, so that threadpoolctl finds and limits it)
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=n)
    return "BLAS/OpenMP threads: %d (%s; set OMP_NUM_THREADS or OPENBLAS_NUM_THREADS to choose)" % (n, why)
