"""The one flag parser of every command (gflags rules): single or double dash, no prefix matching, "did you
mean", positional arguments between flags, one -help format, `distcaffe --version`, `-snapshot auto`, and
relative paths shown resolved in file errors."""
import os
import subprocess
import sys

import pytest

from distcaffe.errors import CaffeError
from distcaffe.launcher import flags as F
from distcaffe.launcher.cli import main
from distcaffe.launcher.resume import apply_to_args, latest_state, resolve_snapshot

FLAGS = [F.Flag("shuffle", bool, False, "shuffle"), F.Flag("seed", int, 0, "seed"),
         F.Flag("cpu_workers", int, 0, "ranks", aliases=("cpu-workers",))]


def test_gflags_spellings_and_positionals():
    v = F.parse("t", ["a", "-shuffle", "--seed=3", "b", "--cpu-workers", "2"], FLAGS, positional=("x", "y"),
                optional=("z",))
    assert v == {"shuffle": True, "seed": 3, "cpu_workers": 2, "x": "a", "y": "b", "z": None}
    assert F.parse("t", ["-noshuffle", "--", "-odd"], FLAGS, positional=("x",))["x"] == "-odd"
    assert F.parse("t", ["--shuffle=false"], FLAGS)["shuffle"] is False


@pytest.mark.parametrize("argv, msg", [
    (["-shuf"], r"unknown flag '-shuf'; did you mean -shuffle\?"),      # argparse would take the prefix
    (["--sed=1"], r"did you mean -seed\?"),
    (["-zzzz"], r"known flags: -cpu_workers, -seed, -shuffle"),
    (["-noseed"], r"-seed is not a boolean flag"),
    (["a", "b"], r"unexpected argument 'b'"),
])
def test_mistakes_are_one_line(argv, msg):
    with pytest.raises(CaffeError, match=msg):
        F.parse("t", argv, FLAGS, optional=("x",))


def test_missing_positional_names_it():
    with pytest.raises(CaffeError, match="missing LISTFILE DB_NAME"):
        F.parse("convert_imageset", ["root/"], FLAGS, positional=("root_folder", "listfile", "db_name"))


@pytest.mark.parametrize("command", ["train", "test", "time", "convert_imageset", "compute_image_mean", "plot",
                                     "data", "upgrade_net_proto_text", "scripts", "examples"])
def test_every_command_shares_the_parser(command, capsys):
    assert main([command, "-help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: distcaffe %s [flags]" % command), out
    assert main([command, "-no_such_flag_zz"]) == 2
    assert "unknown flag '-no_such_flag_zz'" in capsys.readouterr().err


def test_data_tool_rejects_a_prefix(capsys):
    assert main(["convert_imageset", "-shuf", "r/", "l.txt", "db"]) == 2
    assert "did you mean -shuffle?" in capsys.readouterr().err


def test_unknown_command_suggests(capsys):
    assert main(["trian"]) == 2
    assert "did you mean 'train'?" in capsys.readouterr().err


def test_version():
    r = subprocess.run([sys.executable, "-m", "distcaffe.launcher.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("distcaffe "), r
    assert main(["-version"]) == 0


def test_snapshot_auto_picks_the_newest_state(tmp_path):
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "n.prototxt"\nbase_lr: 0.1\nsnapshot_prefix: "%s/snaps/lenet"\n' % tmp_path)
    (tmp_path / "snaps").mkdir()
    assert resolve_snapshot("auto", str(solver)) is None
    for it, ext in ((5, ".solverstate"), (100, ".solverstate.h5"), (20, ".solverstate"), (7, ".caffemodel")):
        (tmp_path / "snaps" / ("lenet_iter_%d%s" % (it, ext))).write_bytes(b"")
    assert latest_state(str(tmp_path / "snaps" / "lenet")).endswith("lenet_iter_100.solverstate.h5")
    assert resolve_snapshot("x.solverstate", str(solver)) == "x.solverstate"
    # with -weights (a fine-tuning job script): a found state resumes, none fine-tunes; explicit both is an error
    args = apply_to_args({"solver": str(solver), "snapshot": "auto", "weights": "w.caffemodel"})
    assert args["snapshot"].endswith("lenet_iter_100.solverstate.h5") and args["weights"] == ""
    with pytest.raises(CaffeError, match="but not both"):
        apply_to_args({"solver": str(solver), "snapshot": "s.solverstate", "weights": "w.caffemodel"})
    empty = tmp_path / "empty.prototxt"
    empty.write_text('net: "n.prototxt"\nsnapshot_prefix: "%s/none/x"\n' % tmp_path)
    assert apply_to_args({"solver": str(empty), "snapshot": "auto", "weights": "w"}) == {
        "solver": str(empty), "snapshot": "", "weights": "w"}


def test_relative_path_errors_show_the_resolved_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["upgrade_net_proto_text", "nets/missing.prototxt", "out.prototxt"]) == 2
    err = capsys.readouterr().err
    assert "nets/missing.prototxt: No such file (resolved: %s)" % os.path.join(tmp_path, "nets/missing.prototxt") \
        in err, err
    assert main(["compute_image_mean", "no_lmdb"]) == 2
    assert "(resolved: %s)" % (tmp_path / "no_lmdb") in capsys.readouterr().err
