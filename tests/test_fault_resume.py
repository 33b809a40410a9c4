"""Stop + `-snapshot` resume is the uninterrupted run, bit for bit: weights equal exactly after resuming from a
mid-run snapshot, for each data layer (Data from LMDB with and without shuffle, ImageData, HDF5Data), with
dropout drawing from the framework RNG and random mirroring, in one process and under `mpiexec -n 2`."""
import os
import shutil
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _dist_helpers as h  # noqa: E402

pytestmark = pytest.mark.slow
SOURCES = {
    "lmdb": 'type: "Data" data_param {{ source: "{lmdb}" batch_size: 5 backend: LMDB }}',
    "lmdb_shuffle": 'type: "Data" data_param {{ source: "{lmdb}" batch_size: 5 shuffle: true threads: 3 }}',
    "image_data": 'type: "ImageData" image_data_param {{ source: "{images}" root_folder: "{root}/" batch_size: 5 '
                  'shuffle: true is_color: false }}',
    "hdf5": 'type: "HDF5Data" hdf5_data_param {{ source: "{h5list}" batch_size: 5 shuffle: true }}',
}
NET = """name: "resume"
layer {{ name: "data" top: "data" top: "label" include {{ phase: TRAIN }} {source}
  {transform} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param {{ num_output: 8 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param {{ dropout_ratio: 0.3 }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""


def make_data(tmp):
    """The same 37 labelled 1x4x4 images as an LMDB, PNG files with a list, and two HDF5 files."""
    import h5py
    from PIL import Image
    tmp.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (37, 1, 4, 4)).astype(np.uint8)
    labels = np.arange(37) % 3
    h.make_lmdb(tmp / "lmdb", n=37)
    lines = []
    for i, img in enumerate(images):
        Image.fromarray(img[0]).save(tmp / ("%02d.png" % i))
        lines.append("%02d.png %d" % (i, labels[i]))
    (tmp / "images.txt").write_text("\n".join(lines) + "\n")
    names = []
    for k, part in enumerate((slice(0, 20), slice(20, 37))):
        name = tmp / ("part%d.h5" % k)
        with h5py.File(name, "w") as f:
            f["data"] = images[part].astype(np.float32) / 255
            f["label"] = labels[part].astype(np.float32)
        names.append(str(name))
    (tmp / "h5list.txt").write_text("\n".join(names) + "\n")
    return {"lmdb": tmp / "lmdb", "images": tmp / "images.txt", "root": tmp, "h5list": tmp / "h5list.txt"}


def make_solver(tmp, data, kind, name, max_iter=13, snapshot=5, seed=11):
    d = tmp / name
    d.mkdir()
    transform = "" if kind == "hdf5" else "transform_param { scale: 0.00390625 mirror: true }"
    (d / "net.prototxt").write_text(NET.format(source=SOURCES[kind].format(**data), transform=transform))
    (d / "solver.prototxt").write_text(
        'net: "%s/net.prototxt"\nbase_lr: 0.2\nmomentum: 0.9\nlr_policy: "step"\ngamma: 0.5\nstepsize: 4\n'
        'max_iter: %d\nsnapshot: %d\nsnapshot_prefix: "%s/snap"\nrandom_seed: %d\ndisplay: 0\n'
        % (d, max_iter, snapshot, d, seed))
    return d / "solver.prototxt"


def assert_bit_identical(a, b):
    wa, wb = h.weights(a), h.weights(b)
    assert wa.keys() == wb.keys() and wa
    for name in wa:
        for x, y in zip(wa[name], wb[name]):
            assert np.array_equal(x, y), "layer %s differs: max |dw| = %g" % (name, np.abs(x - y).max())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("resume_data"))


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_single_process_resume_is_bit_identical(tmp_path, data, kind):
    full = make_solver(tmp_path, data, kind, "full")
    h.single_process(full)
    resumed = make_solver(tmp_path, data, kind, "resumed", seed=999)  # the snapshot's RNG state must win
    shutil.copy(full.parent / "snap_iter_5.caffemodel", resumed.parent)
    shutil.copy(full.parent / "snap_iter_5.solverstate", resumed.parent)
    h.single_process(resumed, resume=resumed.parent / "snap_iter_5.solverstate")
    assert_bit_identical(full.parent / "snap_iter_13.caffemodel", resumed.parent / "snap_iter_13.caffemodel")


@pytest.mark.parametrize("kind", ["lmdb_shuffle", "image_data", "hdf5"])
def test_two_rank_resume_is_bit_identical(tmp_path, data, kind):
    assert shutil.which("mpiexec"), "mpiexec is not on PATH"
    helper = h.ROOT / "tests" / "_dist_helpers.py"
    full = make_solver(tmp_path, data, kind, "full")
    r = h.mpiexec(2, [helper, full])
    assert r.returncode == 0, r.stderr[-3000:]
    r = h.mpiexec(2, [helper, full, "snapshot=%s" % (full.parent / "snap_iter_5.solverstate")])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "WARNING" not in r.stderr, r.stderr[-3000:]
    # the resumed job rewrote snap_iter_10 and snap_iter_13; compare with a third, uninterrupted job
    again = make_solver(tmp_path, data, kind, "again")
    r = h.mpiexec(2, [helper, again])
    assert r.returncode == 0, r.stderr[-3000:]
    assert_bit_identical(again.parent / "snap_iter_13.caffemodel", full.parent / "snap_iter_13.caffemodel")


def test_sigterm_snapshot_then_resume_is_bit_identical(tmp_path, data):
    """The walltime path: SIGTERM snapshots at whatever iteration the run reached; `-snapshot` finishes it."""
    import signal
    import subprocess
    import time
    train = [sys.executable, "-m", "distcaffe.launcher.cli", "train"]
    env = dict(os.environ, PYTHONPATH=str(h.ROOT))
    full = make_solver(tmp_path, data, "lmdb_shuffle", "full", max_iter=1000, snapshot=0)
    assert subprocess.run(train + ["-solver", str(full)], env=env, capture_output=True).returncode == 0
    stopped = make_solver(tmp_path, data, "lmdb_shuffle", "stopped", max_iter=1000, snapshot=0)
    proc = subprocess.Popen(train + ["-solver", str(stopped)], env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "Starting Optimization" in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    states = sorted(stopped.parent.glob("snap_iter_*.solverstate"))
    assert len(states) == 1 and "iter_1000" not in states[0].name, states
    r = subprocess.run(train + ["-solver", str(stopped), "-snapshot", str(states[0])], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0 and "WARNING" not in r.stderr, r.stderr[-2000:]
    assert_bit_identical(full.parent / "snap_iter_1000.caffemodel", stopped.parent / "snap_iter_1000.caffemodel")
