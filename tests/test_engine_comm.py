"""Communicators: bounded waits, world size 1, the MPI communicator's collectives under real mpiexec, and NCCL
(imported lazily; exercised only where cupy sees a GPU)."""
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import _dist_helpers as h

from distcaffe.engine.comm_single import SingleCommunicator
from distcaffe.engine.communicator import CollectiveError, Request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Never(Request):
    def test(self):
        return False


def test_wait_is_bounded(monkeypatch):
    monkeypatch.setenv("DISTCAFFE_COLLECTIVE_TIMEOUT", "0.2")
    with pytest.raises(CollectiveError, match="allreduce did not complete within 0 s"):
        Never().wait()
    with pytest.raises(CollectiveError, match="barrier did not complete within 0 s"):
        Never().wait(0.1, "barrier")


def test_single_is_identity():
    c = SingleCommunicator()
    a = np.arange(4.0)
    assert c.allreduce(a) is a and list(a) == [0, 1, 2, 3]
    assert c.broadcast(a) is a and c.share({"x": 1}) == {"x": 1} and c.sum_scalar(2.5) == 2.5
    with pytest.raises(SystemExit):
        c.abort("boom", 3)


def test_nccl_module_imports_without_cupy():
    r = subprocess.run([sys.executable, "-c", "import sys, distcaffe.engine.comm_nccl, distcaffe.engine.worker; "
                        "print('cupy' in sys.modules)"], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


@pytest.mark.slow
def test_mpi_collectives_three_ranks(tmp_path):
    mpiexec = h.tool("mpiexec")
    script = tmp_path / "coll.py"
    script.write_text(textwrap.dedent("""
        import numpy as np
        from distcaffe.engine.comm_mpi import MPICommunicator
        c = MPICommunicator()
        a = np.full(1000, c.rank + 1, np.float32)
        reqs = [c.iallreduce(a), c.iallreduce(b := np.array([c.rank], np.float64))]
        for r in reqs:
            r.wait()
        w = np.full(3, 10.0 * c.rank)
        c.broadcast(w, root=2)
        c.barrier()
        tok = c.share("id-%d" % c.rank, root=1)
        print("R%d %g %g %g %s %d" % (c.rank, a[0], b[0], w[0], tok, c.local_size), flush=True)
        c.close()
    """))
    r = subprocess.run([mpiexec, "-n", "3", sys.executable, str(script)], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = sorted(re.findall(r"R\d [^R\n]*\d", r.stdout))  # ranks' lines may interleave
    assert lines == ["R%d 6 3 20 id-1 3" % i for i in range(3)]


def _gpu():
    from distcaffe import backend
    return backend.gpu_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu(), reason="needs a CUDA device visible to cupy")
def test_nccl_one_rank_on_gpu():
    import cupy
    from distcaffe.engine.comm_nccl import NCCLCommunicator
    c = NCCLCommunicator(SingleCommunicator(), 0)
    a = cupy.arange(8, dtype=cupy.float32)
    c.iallreduce(a).wait()
    c.broadcast(a)
    assert cupy.asnumpy(a).tolist() == list(range(8))
    c.close()


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu(), reason="needs a CUDA device visible to cupy")
def test_mpi_two_ranks_share_one_gpu(tmp_path):
    """Two MPI ranks on GPU 0 (one GPU cannot host two NCCL ranks): device buffers staged through the host."""
    mpiexec = h.tool("mpiexec")
    script = tmp_path / "gpu2.py"
    script.write_text(textwrap.dedent("""
        import cupy
        from distcaffe.engine.comm_mpi import MPICommunicator
        c = MPICommunicator()
        cupy.cuda.Device(0).use()
        a = cupy.full(1 << 20, c.rank + 1, cupy.float32)
        h = cupy.full(7, c.rank + 1, cupy.float64)
        for r in [c.iallreduce(a), c.iallreduce(h)]:
            r.wait()
        w = cupy.full(3, 10.0 * c.rank)
        c.broadcast(w, root=1)
        print("R%d %g %g %g %g" % (c.rank, float(a[0]), float(a[-1]), float(h[3]), float(w[0])), flush=True)
        c.close()
    """))
    r = subprocess.run([mpiexec, "-n", "2", sys.executable, str(script)], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(re.findall(r"R\d [^R\n]*\d", r.stdout)) == ["R0 3 3 3 10", "R1 3 3 3 10"]


def _cupy_standing_in(monkeypatch, nccl_available):
    """cupy >= 14 as a CPU-only node sees it: `cupy.cuda.nccl` always imports, a stub with `available`."""
    import types
    cp = types.ModuleType("cupy")
    cp.cuda = types.ModuleType("cupy.cuda")
    cp.cuda.nccl = types.ModuleType("cupy.cuda.nccl")
    cp.cuda.nccl.available = nccl_available
    cp.is_available = lambda: True
    for name, mod in (("cupy", cp), ("cupy.cuda", cp.cuda), ("cupy.cuda.nccl", cp.cuda.nccl)):
        monkeypatch.setitem(sys.modules, name, mod)


@pytest.mark.parametrize("available", [False, True])
def test_nccl_counts_only_when_cupy_says_available(monkeypatch, available):
    from distcaffe import backend
    from distcaffe.engine import worker
    _cupy_standing_in(monkeypatch, available)
    assert (backend.nccl_module() is not None) == available
    assert worker._nccl_usable() == available          # auto: MPI unless NCCL really loads


def test_nccl_asked_for_without_nccl_is_one_clear_error(monkeypatch):
    from distcaffe.engine.comm_nccl import NCCLCommunicator
    from distcaffe.engine.communicator import CollectiveError
    _cupy_standing_in(monkeypatch, False)
    with pytest.raises(CollectiveError, match="no usable NCCL on this node.*-comm mpi"):
        NCCLCommunicator(SingleCommunicator(), 0)


def test_cupy_without_the_nccl_module_means_no_nccl(monkeypatch):
    from distcaffe import backend
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", None)        # cupy < 14 without NCCL: import fails
    assert backend.nccl_module() is None
