"""The upgrade commands: upgraded output on success; on bad input one line naming the file, exit 2, no OUT."""
import os
import re
import subprocess
import sys

import pytest

import distcaffe.io as dio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BAD_TEXT = {
    "typo": ('layer { name: "a" type: "ReLU"\n  bottomm: "x" }\n', r"typo\.prototxt:2:\d+: .*bottomm"),
    "unclosed": ('layer { name: "a" type: "ReLU"\n', r"unclosed\.prototxt:\d+:\d+: .*\}"),
    "enum": ('layer { name: "a" type: "ReLU"\n include { phase: TRIAN } }\n', r"enum\.prototxt:2:\d+: .*TRIAN"),
    "empty": ("", r"empty\.prototxt: is empty"),
}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "distcaffe.launcher.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", sorted(BAD_TEXT))
def test_bad_text_one_line_exit_2(tmp_path, name):
    text, pattern = BAD_TEXT[name]
    src, out = tmp_path / (name + ".prototxt"), tmp_path / "out.prototxt"
    src.write_text(text)
    proc = run_cli("upgrade_net_proto_text", src, out)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists() and os.listdir(tmp_path) == [src.name]


def test_bad_binaries_via_cli(golden, tmp_path):
    raw = (golden / "models" / "lenet" / "weights.caffemodel").read_bytes()
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "out.caffemodel"
    proc = run_cli("upgrade_net_proto_binary", cut, out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "cut.caffemodel" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()
    missing = run_cli("upgrade_net_proto_text", tmp_path / "nope.prototxt", out)
    assert missing.returncode == 2 and "nope.prototxt: No such file" in missing.stderr


def test_upgrade_text_binary_solver(zoo, golden, tmp_path):
    out = tmp_path / "lenet.prototxt"
    proc = run_cli("upgrade_net_proto_text", zoo / "BVLC__caffe__legacy_v0/examples/lenet/lenet.prototxt", out)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "layers {" not in text and 'type: "Convolution"' in text
    assert dio.read_net_param(out) == dio.read_net_param(zoo / "BVLC__caffe__legacy_v0/examples/lenet/lenet.prototxt")

    out_bin = tmp_path / "w.caffemodel"
    proc = run_cli("upgrade_net_proto_binary", golden / "models/lenet/weights.caffemodel", out_bin)
    assert proc.returncode == 0, proc.stderr
    assert out_bin.read_bytes() == (golden / "models/lenet/weights.caffemodel").read_bytes()

    out_solver = tmp_path / "solver.prototxt"
    src = tmp_path / "old_solver.prototxt"
    src.write_text('net: "x.prototxt"\nbase_lr: 0.01\nsolver_type: NESTEROV\n')
    proc = run_cli("upgrade_solver_proto_text", src, out_solver)
    assert proc.returncode == 0, proc.stderr
    assert 'type: "Nesterov"' in out_solver.read_text() and "solver_type" not in out_solver.read_text()


def test_usage_error(tmp_path):
    proc = run_cli("upgrade_net_proto_text", tmp_path / "only_one")
    assert proc.returncode == 2 and "usage" in proc.stderr and "Traceback" not in proc.stderr
