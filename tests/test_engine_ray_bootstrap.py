"""The Ray bootstrap a GPU job uses under NCCL: two real Ray actors share an id, gather, reduce host arrays and
meet at barriers through Ray's key-value store, with torch never imported (GPU jobs need no GLOO)."""
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _dist_helpers as h  # noqa: E402

h.need_module("ray", "ray")
pytestmark = pytest.mark.slow

SCRIPT = r"""
import sys
import numpy as np
import ray

@ray.remote(num_cpus=1)
class Rank:
    def run(self, rank):
        from distcaffe.engine.comm_ray import RayBootstrap
        b = RayBootstrap(rank, 2, "bootstrap-test")
        uid = b.share(b"nccl-unique-id" if rank == 0 else None)
        names = b.allgather("rank%d" % rank)
        flags = b.allreduce(np.array([rank + 1.0, 10.0]))
        b.barrier()
        root = b.broadcast(np.array([7.0 if rank == 1 else 0.0]), root=1)
        return uid, names, flags.tolist(), root.tolist(), "torch" in sys.modules

ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
try:
    actors = [Rank.remote() for _ in range(2)]
    for out in ray.get([a.run.remote(r) for r, a in enumerate(actors)], timeout=120):
        print(out)
        uid, names, flags, root, torch_loaded = out
        assert uid == b"nccl-unique-id" and names == ["rank0", "rank1"], out
        assert flags == [3.0, 20.0] and root == [7.0] and not torch_loaded, out
finally:
    ray.shutdown()
print("BOOTSTRAP OK")
"""


def test_ray_bootstrap_without_torch(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(h.ROOT), RAY_ADDRESS="")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0 and "BOOTSTRAP OK" in proc.stdout, (proc.stdout + proc.stderr)[-3000:]
