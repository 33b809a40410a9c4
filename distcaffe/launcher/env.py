"""Where this process sits in a job: rank, world size and local rank from the launcher's environment.

Read before MPI or CUDA start, so the GPU of a rank is chosen before any device context exists.
Launchers: OpenMPI (OMPI_COMM_WORLD_*), MPICH/Hydra and Intel MPI (PMI_RANK, PMI_SIZE, MPI_LOCALRANKID),
PMIx (PMIX_RANK), SLURM srun (SLURM_PROCID, SLURM_LOCALID, SLURM_STEP_NUM_TASKS / SLURM_NTASKS); the PBS or
SLURM batch context (job id, nodes) is reported too.
"""
import os
import re
from dataclasses import dataclass, field



def _error(message):
    """A CaffeError, imported lazily: this module is read before numpy loads (see launcher/threads.py)."""
    from distcaffe.errors import CaffeError
    return CaffeError(message)


@dataclass
class Placement:
    """This process's place in the job; `launcher` says who started it ("single" when nobody did)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    launcher: str = "single"
    scheduler: str = ""
    job_id: str = ""
    nodes: list = field(default_factory=list)

    @property
    def is_mpi(self):
        return self.launcher in ("openmpi", "mpich", "pmix", "slurm")


def _int(env, name, default=None):
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise _error("environment variable %s=%r is not an integer" % (name, value)) from None


def slurm_tasks_on_node(tasks_per_node, node_id):
    """Tasks on node `node_id` from SLURM's compressed list, e.g. '4(x2),2' -> [4, 4, 2]."""
    counts = []
    for part in tasks_per_node.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            raise _error("cannot parse SLURM tasks-per-node list %r" % tasks_per_node)
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    if not 0 <= node_id < len(counts):
        raise _error("SLURM_NODEID=%d is outside the tasks-per-node list %r" % (node_id, tasks_per_node))
    return counts[node_id]


def _pbs_nodes(env):
    path = env.get("PBS_NODEFILE")
    if not path:
        return []
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise _error("PBS_NODEFILE %s cannot be read: %s" % (path, e)) from None


def _batch_context(env, p):
    if env.get("SLURM_JOB_ID"):
        p.scheduler, p.job_id = "slurm", env["SLURM_JOB_ID"]
        p.nodes = [env.get("SLURM_JOB_NODELIST", "")]
    elif env.get("PBS_JOBID") or env.get("PBS_NODEFILE"):
        p.scheduler, p.job_id = "pbs", env.get("PBS_JOBID", "")
        p.nodes = sorted(set(_pbs_nodes(env)))
    return p


def detect(env=None):
    """The Placement of this process from `env` (default os.environ)."""
    env = os.environ if env is None else env
    p = Placement()
    if "OMPI_COMM_WORLD_RANK" in env:
        p.launcher = "openmpi"
        p.rank, p.size = _int(env, "OMPI_COMM_WORLD_RANK"), _int(env, "OMPI_COMM_WORLD_SIZE", 1)
        p.local_rank = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", 0)
        p.local_size = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", 1)
    elif "PMI_RANK" in env:
        p.launcher = "mpich"
        p.rank, p.size = _int(env, "PMI_RANK"), _int(env, "PMI_SIZE", 1)
        p.local_rank = _int(env, "MPI_LOCALRANKID", _int(env, "SLURM_LOCALID", 0))
        p.local_size = _int(env, "MPI_LOCALNRANKS", 1)
    elif "PMIX_RANK" in env:
        p.launcher = "pmix"
        p.rank = _int(env, "PMIX_RANK")
        p.size = _int(env, "SLURM_STEP_NUM_TASKS", _int(env, "SLURM_NTASKS", 1))
        p.local_rank = _int(env, "SLURM_LOCALID", 0)
    elif "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env):
        # an srun task (the batch script itself also has SLURM_PROCID=0, but no step of its own)
        p.launcher = "slurm"
        p.rank = _int(env, "SLURM_PROCID")
        p.size = _int(env, "SLURM_STEP_NUM_TASKS", _int(env, "SLURM_NTASKS", 1))
        p.local_rank = _int(env, "SLURM_LOCALID", 0)
        per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
        p.local_size = slurm_tasks_on_node(per_node, _int(env, "SLURM_NODEID", 0)) if per_node else 1
    if p.launcher == "pmix" and env.get("SLURM_STEP_TASKS_PER_NODE"):
        p.local_size = slurm_tasks_on_node(env["SLURM_STEP_TASKS_PER_NODE"], _int(env, "SLURM_NODEID", 0))
    if not (0 <= p.rank < p.size) or not (0 <= p.local_rank < max(p.local_size, p.local_rank + 1)):
        raise _error("inconsistent %s environment: rank %d of %d (local rank %d)"
                         % (p.launcher, p.rank, p.size, p.local_rank))
    p.local_size = max(p.local_size, p.local_rank + 1)
    return _batch_context(env, p)


def parse_gpu_flag(flag, visible):
    """Device ids named by Caffe's `-gpu` flag: 'all' -> every visible device, '0,1' -> [0, 1]."""
    if flag is None or flag == "":
        return []
    flag = str(flag).strip()
    if flag == "all":
        if visible == 0:
            raise _error("-gpu all: no CUDA device is visible (cupy sees none)")
        return list(range(visible))
    try:
        ids = [int(x) for x in flag.split(",") if x.strip() != ""]
    except ValueError:
        raise _error("-gpu must be 'all' or a comma-separated list of device ids (got '%s')" % flag) from None
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise _error("-gpu must list distinct non-negative device ids (got '%s')" % flag)
    if visible == 0:
        raise _error("-gpu %s asked for, but no CUDA device is visible (cupy sees none)" % flag)
    bad = [i for i in ids if i >= visible]
    if bad:
        raise _error("-gpu %s: device %s not present (%d visible)" % (flag, bad[0], visible))
    return ids


def device_for_rank(devices, placement):
    """The device of this rank: local rank i uses devices[i]. One visible device for many local ranks is
    per-task GPU binding (srun --gpus-per-task=1); more local ranks than several devices is an error."""
    if not devices:
        return None
    if placement.local_size > len(devices) > 1:
        raise _error("%d ranks on this node but only %d GPUs given by -gpu (%s); start one rank per GPU"
                         % (placement.local_size, len(devices), ",".join(map(str, devices))))
    return devices[placement.local_rank % len(devices)]
