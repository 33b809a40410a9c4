"""Every zoo prototxt parses as its kind and round-trips text -> message -> binary -> message -> text."""
import csv

import pytest

import distcaffe.io as dio
from distcaffe.errors import ParseError
from distcaffe.io.text import read_text
from distcaffe.proto import caffe_pb2 as pb

KINDS = {"deploy": pb.NetParameter, "train_val": pb.NetParameter, "solver": pb.SolverParameter,
         "other": pb.LabelMap}
STEPEARLY = "BVLC__caffe__legacy_v1/examples/mnist/lenet_stepearly_solver.prototxt"


def manifest(zoo):
    with open(zoo / "MANIFEST.tsv") as f:
        return [(r["relative_path"], r["kind"], r["layer_format"]) for r in csv.DictReader(f, delimiter="\t")]


def read_as_kind(path, kind):
    if kind == "solver":
        return dio.read_solver_param(path)
    if kind == "other":
        return read_text(path, pb.LabelMap)
    return dio.read_net_param(path)


def test_every_zoo_file_parses_as_its_kind(zoo):
    rows = manifest(zoo)
    assert len(rows) > 200
    for rel, kind, fmt in rows:
        path = zoo / rel
        if rel == STEPEARLY:
            with pytest.raises(ParseError, match=r"lenet_stepearly_solver\.prototxt:\d+:\d+: .*stepearly"):
                read_as_kind(path, kind)
            continue
        msg = read_as_kind(path, kind)
        assert isinstance(msg, KINDS[kind]), rel
        if KINDS[kind] is pb.NetParameter:
            assert len(msg.layer) > 0 and len(msg.layers) == 0 and len(msg.input) == 0, rel
            assert all(l.type for l in msg.layer), rel


def test_text_binary_round_trip(zoo):
    for rel, kind, _ in manifest(zoo):
        if rel == STEPEARLY:
            continue
        first = read_text(zoo / rel, KINDS[kind])
        again = KINDS[kind]()
        again.ParseFromString(first.SerializeToString())
        assert dio.format_text(again) == dio.format_text(first), rel
        reparsed = dio.parse_net_text(dio.format_text(first)) if kind in ("deploy", "train_val") else None
        if reparsed is not None:
            assert reparsed == dio.upgrade_net_param(first), rel


def test_consolidated_solver_embedded_v1_net_upgraded(zoo):
    solver = dio.read_solver_param(zoo / "BVLC__caffe/examples/mnist/lenet_consolidated_solver.prototxt")
    assert len(solver.net_param.layers) == 0
    types = [l.type for l in solver.net_param.layer]
    assert types[0] == "Data" and "Convolution" in types and "SoftmaxWithLoss" in types


def test_solver_type_enum_upgraded():
    s = dio.parse_solver_text('solver_type: ADAM base_lr: 0.1 max_iter: 10')
    assert s.type == "Adam" and not s.HasField("solver_type")
    with pytest.raises(ParseError, match="solver_type"):
        dio.parse_solver_text('solver_type: ADAM type: "Adam"', "s.prototxt")


def test_nvcaffe_fields_parse():
    net = dio.parse_net_text('default_forward_type: FLOAT16 global_grad_scale_adaptive: true reduce_buckets: 2 '
                             'layer { name: "d" type: "Data" top: "x" forward_type: FLOAT16 '
                             'data_param { threads: 2 parser_threads: 2 cache: true shuffle: true } '
                             'transform_param { allow_upscale: true interpolation_algo_up: INTER_LINEAR } } '
                             'layer { name: "e" type: "ELU" bottom: "x" top: "y" elu_param { lambda: 1.05 } }')
    assert net.default_forward_type == pb.FLOAT16 and net.layer[0].data_param.cache
    assert abs(net.layer[1].elu_param.__getattribute__("lambda") - 1.05) < 1e-6
    s = dio.parse_solver_text('larc: true larc_policy: "clip" larc_eta: 0.002 min_lr: 1e-5 '
                              'solver_data_type: FLOAT16 momentum_policy: "poly" weight_decay_policy: "poly"')
    assert s.larc and s.larc_policy == "clip" and s.solver_data_type == pb.FLOAT16


def test_input_fields_become_input_layer():
    net = dio.parse_net_text('input: "data" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 5 '
                             'layer { name: "r" type: "ReLU" bottom: "data" top: "data" }')
    assert [l.type for l in net.layer] == ["Input", "ReLU"]
    assert net.layer[0].name == "input" and list(net.layer[0].input_param.shape[0].dim) == [1, 3, 4, 5]
    net = dio.parse_net_text('input: "a" input_shape { dim: 2 dim: 3 } input: "b" input_shape { dim: 4 }')
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[2, 3], [4]]


def test_format_text_write_text_atomic(tmp_path):
    net = dio.parse_net_text('name: "n" layer { name: "a" type: "Input" top: "x" }')
    out = tmp_path / "n.prototxt"
    dio.write_text(net, out)
    assert dio.read_net_param(out) == net
    assert [p.name for p in tmp_path.iterdir()] == ["n.prototxt"]


def test_missing_required_field_is_a_parse_error_naming_it():
    """BVLC's ClipParameter.min/max are `required`: Caffe's parser refuses a net without them, and so do we (one
    line naming the file and the field path) rather than failing later when the net is saved."""
    with pytest.raises(ParseError, match=r"^n.prototxt: NetParameter .* missing required fields: "
                                         r"layer\[0\]\.clip_param\.max$"):
        dio.parse_net_text('layer { name: "c" type: "Clip" clip_param { min: -1 } }', "n.prototxt")
