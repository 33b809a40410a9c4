"""The wheel is whole: it installs only `distcaffe` (and the sanctioned `caffe` for pycaffe scripts) at the top
level, carries the job scripts and the README's examples, and both work from an install outside the checkout."""
import os
import subprocess
import sys
import zipfile

import pytest

import _dist_helpers as h

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(out), str(h.ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (path,) = out.glob("distcaffe-*.whl")
    return path


def test_wheel_file_list(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"distcaffe", "caffe", next(t for t in top if t.endswith(".dist-info"))}, sorted(top)
    for shipped in ("distcaffe/scripts/distcaffe-job.sh", "distcaffe/scripts/slurm/train_multi_node.sbatch",
                    "distcaffe/scripts/pbs/train_single_node.pbs", "distcaffe/scripts/torque/train.pbs",
                    "distcaffe/examples/mnist/lenet.prototxt", "distcaffe/examples/mnist/lenet_solver.prototxt",
                    "distcaffe/engine/worker.py", "distcaffe/launcher/cli.py", "distcaffe/proto/caffe.proto"):
        assert shipped in names, shipped
    assert not [n for n in names if n.endswith((".mdb", ".caffemodel", ".solverstate", ".pyc"))]


def test_scripts_and_examples_work_from_an_install(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)             # a pure-Python wheel installs by unpacking
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "DISTCAFFE_", "SRUN_"))}
    env["PYTHONPATH"] = str(site)
    cli = [sys.executable, "-m", "distcaffe.launcher.cli"]
    work = tmp_path / "work"
    work.mkdir()

    def run(args, **kw):
        r = subprocess.run(args, cwd=str(work), env=kw.pop("env", env), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
        return r

    lib = run(cli + ["scripts", "lib"]).stdout.strip()
    assert lib == str(site / "distcaffe" / "scripts" / "distcaffe-job.sh")
    copied = run(cli + ["scripts", "slurm", "jobs"]).stdout.split()
    assert sorted(os.path.basename(p) for p in copied) == ["train_multi_node.sbatch", "train_single_node.sbatch"]
    r = subprocess.run(cli + ["scripts", "slurm", "jobs"], cwd=str(work), env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "already exists (use -force" in r.stderr

    # the copied sbatch script under a simulated SLURM: it finds its library in the install and launches
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "srun").write_text("#!/bin/sh\necho \"srun $*\" >> %s/srun.log\n" % tmp_path)
    (shims / "srun").chmod(0o755)
    solver = work / "solver.prototxt"
    solver.write_text('net: "n.prototxt"\nmax_iter: 10\n')
    job_env = dict(env, PATH="%s:%s" % (shims, env["PATH"]), SLURM_JOB_ID="3", SLURM_SUBMIT_DIR=str(work),
                   DISTCAFFE_CMD=" ".join(cli), DISTCAFFE_VENV=str(tmp_path / "none"))
    run(["bash", "jobs/train_single_node.sbatch", str(solver)], env=job_env)
    assert (tmp_path / "srun.log").read_text().split() == ["srun", "--kill-on-bad-exit=1", *cli, "train",
                                                         "-solver", str(solver), "-gpu", "all", "-snapshot", "auto"]

    # a README example, from the copied examples
    run(cli + ["examples", "."])
    run(cli + ["upgrade_net_proto_text", "examples/mnist/lenet.prototxt", "lenet_upgraded.prototxt"])
    assert "name: \"LeNet\"" in (work / "lenet_upgraded.prototxt").read_text()
