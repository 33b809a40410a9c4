"""`distcaffe train --ray auto|ADDRESS`: one Ray actor per GPU (or `--cpu-workers N` CPU actors), placed by a
placement group (PACK by default, SPREAD on request), each running the same engine worker.

Works from a laptop (`auto` with no cluster starts a local one), on a cluster head, and under `ray job
submit`. The driver watches the actors: when one dies or fails, it names the rank, kills the others and
exits non-zero; no actor is left running.
"""
import os
import socket
import tempfile
import time
import uuid

from distcaffe.errors import CaffeError
from distcaffe.log import get_logger

log = get_logger("launcher")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RayRank:
    """Actor body: one rank of the job (made a Ray actor class in `launch`)."""

    def __init__(self, rank, size, group):
        self.rank, self.size, self.group = rank, size, group

    def where(self):
        import ray
        return ray.get_runtime_context().get_node_id(), os.getpid()

    def train(self, solver, options, local_rank, local_size, use_gpu):
        """Build the communicator (GLOO on CPU; on GPUs NCCL, bootstrapped through Ray's key-value store
        without GLOO or torch) and run the worker; returns its exit code."""
        import ray

        from distcaffe.engine.comm_ray import RayBootstrap, RayCommunicator
        from distcaffe.engine.worker import Worker
        device = None
        if use_gpu:
            from distcaffe.engine.comm_nccl import NCCLCommunicator
            device = 0  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
            comm = NCCLCommunicator(RayBootstrap(self.rank, self.size, self.group, local_rank, local_size), device)
            log.info("rank %d uses GPU %s", self.rank, ray.get_gpu_ids())
        else:
            comm = RayCommunicator(self.rank, self.size, self.group, local_rank, local_size)
        return Worker(comm, options, device).run(solver)


def _running_cluster():
    """The address of a Ray cluster started on this machine that answers, else None (a stale address file
    left by a cluster that died must not make `auto` hang)."""
    path = os.path.join(tempfile.gettempdir(), "ray", "ray_current_cluster")
    try:
        with open(path) as f:
            host, _, port = f.read().strip().rpartition(":")
        socket.create_connection((host, int(port)), timeout=2).close()
        return "%s:%s" % (host, port)
    except (OSError, ValueError):
        return None


def _connect(address):
    """Join the cluster `address` names ('auto': RAY_ADDRESS, else a live local cluster, else start one);
    returns True when this process started the cluster (and must shut it down)."""
    import ray
    if ray.is_initialized():
        return False
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}}
    if address not in ("auto", ""):
        ray.init(address=address, runtime_env=env, log_to_driver=True)
        return False
    if os.environ.get("RAY_ADDRESS"):        # inside `ray job submit`, or set by the user
        ray.init(runtime_env=env, log_to_driver=True)
        return False
    live = _running_cluster()
    if live:
        ray.init(address=live, runtime_env=env, log_to_driver=True)
        return False
    log.info("No running Ray cluster found: starting a local one")
    ray.init(address="local", runtime_env=env, log_to_driver=True)
    return True


def _workers(options, ray):
    """(number of actors, whether they use GPUs)."""
    if options.gpu:
        total = int(ray.cluster_resources().get("GPU", 0))
        if options.gpu == "all":
            if total == 0:
                raise CaffeError("--ray with -gpu all: the Ray cluster has no GPUs (use --cpu-workers N)")
            return total, True
        return len([g for g in str(options.gpu).split(",") if g.strip()]), True
    if options.cpu_workers < 1:
        raise CaffeError("--ray needs -gpu all|LIST or --cpu-workers N to know how many actors to start")
    return options.cpu_workers, False


def launch(solver, options):
    """Run the job on Ray; returns the exit code (0 when every rank finished)."""
    try:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    except ImportError as e:
        raise CaffeError("--ray needs Ray: pip install 'distcaffe[ray]' ('distcaffe[ray-cpu]' for CPU actors) (%s)"
                         % e) from None
    started = _connect(options.ray)
    n, use_gpu = _workers(options, ray)
    bundle = {"CPU": 1, "GPU": 1} if use_gpu else {"CPU": 1}
    pg = placement_group([bundle] * n, strategy=options.placement.upper())
    try:
        ray.get(pg.ready(), timeout=120)
    except Exception:
        remove_placement_group(pg)
        raise CaffeError("Ray could not place %d actors with %s each (%s): cluster resources %s"
                         % (n, bundle, options.placement.upper(), ray.cluster_resources())) from None
    group = "distcaffe-" + uuid.uuid4().hex[:8]
    actor_cls = ray.remote(RayRank)
    actors = [actor_cls.options(num_cpus=1, num_gpus=1 if use_gpu else 0, max_restarts=0,
                                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i)).remote(i, n, group)
              for i in range(n)]
    try:
        where = ray.get([a.where.remote() for a in actors])
        nodes = [w[0] for w in where]
        local = [(nodes[:i].count(nodes[i]), nodes.count(nodes[i])) for i in range(n)]
        log.info("Ray job of %d ranks (%s): %s", n, options.placement.upper(),
                 ", ".join("rank %d (pid %d on node %s)" % (i, w[1], w[0][:8]) for i, w in enumerate(where)))
        solver = os.path.abspath(solver)
        refs = {actors[i].train.remote(solver, options, local[i][0], local[i][1], use_gpu): i for i in range(n)}
        code = _watch(ray, refs, where)
        if code == 0:
            time.sleep(1.0)  # Ray's log monitor forwards the ranks' last lines (performance) before teardown
        return code
    finally:
        for a in actors:
            ray.kill(a, no_restart=True)
        remove_placement_group(pg)
        if started:
            ray.shutdown()


def _watch(ray, refs, where):
    """Wait for every rank; the first failure (a dead actor named first) ends the job with exit code 1."""
    from ray.exceptions import RayActorError
    pending = dict(refs)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        failures = []
        for ref in done:
            rank = pending.pop(ref)
            try:
                code = ray.get(ref)
            except Exception as e:  # RayActorError (actor died) or RayTaskError (its code raised)
                failures.append((rank, e))
                continue
            if code:
                failures.append((rank, "exit code %s" % code))
        if failures:
            more, _ = ray.wait(list(pending), num_returns=len(pending), timeout=2.0)
            for ref in more:
                try:
                    ray.get(ref)
                except Exception as e:
                    failures.append((pending[ref], e))
            failures.sort(key=lambda f: not isinstance(f[1], RayActorError))
            rank, err = failures[0]
            kind = "is lost (its actor died)" if isinstance(err, RayActorError) else "failed"
            msg = "rank %d (pid %d on node %s) %s: %s" % (rank, where[rank][1], where[rank][0][:8], kind,
                                                         str(err).strip().splitlines()[-1] if str(err) else err)
            log.error("%s; stopping the other ranks", msg)
            print("distcaffe: error: %s" % msg, flush=True)
            return 1
    return 0
