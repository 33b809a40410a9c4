"""BLAS/OpenMP pools are sized to the rank's share of the node's cores, never over what the user set."""
import os
import subprocess
import sys

from distcaffe.launcher.threads import size_thread_pools

MPICH_2 = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}


def cores():
    return len(os.sched_getaffinity(0))


def test_two_local_ranks_split_the_cores():
    env = dict(MPICH_2)
    size_thread_pools(env)
    assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == str(max(1, cores() // 2))


def test_user_setting_and_single_process_are_left_alone():
    env = dict(MPICH_2, OPENBLAS_NUM_THREADS="7")
    size_thread_pools(env)
    assert env["OPENBLAS_NUM_THREADS"] == "7"
    alone = {}
    size_thread_pools(alone)
    assert alone == {}


def test_cli_sizes_pools_before_numpy_loads():
    code = ("import os, sys; import distcaffe.launcher.cli; "
            "print(os.environ.get('OPENBLAS_NUM_THREADS'))")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env.update(MPICH_2)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(max(1, cores() // 2))
