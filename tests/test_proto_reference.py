"""Our caffe.proto against upstream's: NVCaffe 0.17.3 and BVLC master, field by field and byte by byte.

The reference files (../shared/reference/proto) are compiled here with protoc under their own package names
(`nvcaffe`, `bvlc`), so their generated modules load beside ours; the wire format does not carry package names.
"""
import importlib
import os
import re
import pathlib
import subprocess
import sys

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor as FD

from conftest import SHARED
from distcaffe.proto import caffe_pb2 as ours

REFERENCE = SHARED / "reference" / "proto"
REFERENCES = {"nvcaffe": "nvcaffe_v0.17.3_fd6cf7ac.caffe.proto", "bvlc": "bvlc_master_9b891540.caffe.proto"}
OUR_PROTO = pathlib.Path(ours.__file__).with_name("caffe.proto")

# (message, field): BVLC master fields whose number NVCaffe gave to one of its own fields. Ours keep the name (for
# prototxt) at another number; NVCaffe's field owns the upstream number. README "Compatibility" lists them.
RENUMBERED_BVLC = {("LayerParameter", "parameter_param"), ("LayerParameter", "recurrent_param"),
                   ("LayerParameter", "swish_param"), ("LayerParameter", "clip_param"),
                   ("SolverParameter", "layer_wise_reduce"), ("SolverParameter", "weights")}
# (message, field): defaults where NVCaffe departs from BVLC and we follow BVLC (README "Compatibility").
BVLC_DEFAULTS = {("SolverParameter", "test_initialization"), ("DataParameter", "prefetch")}


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    """{lineage: (generated module, {message path: DescriptorProto}, {enum path: EnumDescriptorProto})}."""
    if not REFERENCE.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("%s is missing" % REFERENCE)
        pytest.skip("../shared/reference/proto is not present")
    out = tmp_path_factory.mktemp("proto")
    loaded = {}
    for lineage, name in REFERENCES.items():
        text = (REFERENCE / name).read_text()
        assert text.count("package caffe;") == 1
        (out / ("%s.proto" % lineage)).write_text(text.replace("package caffe;", "package %s;" % lineage))
        loaded[lineage] = _compile(out, out / ("%s.proto" % lineage))
    loaded["ours"] = _compile(out, OUR_PROTO, module=ours)
    sys.path.insert(0, str(out))
    try:
        for lineage in REFERENCES:
            loaded[lineage] = (importlib.import_module("%s_pb2" % lineage),) + loaded[lineage][1:]
    finally:
        sys.path.remove(str(out))
    return loaded


def _compile(out, proto, module=None):
    desc = out / (proto.stem + ".pb")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I%s" % proto.parent, "--python_out=%s" % out,
                    "--descriptor_set_out=%s" % desc, str(proto)], check=True)
    fds = descriptor_pb2.FileDescriptorSet.FromString(desc.read_bytes())
    messages, enums = {}, {}

    def walk(m, prefix):
        messages[prefix + m.name] = m
        for e in m.enum_type:
            enums[prefix + m.name + "." + e.name] = e
        for n in m.nested_type:
            walk(n, prefix + m.name + ".")
    for m in fds.file[0].message_type:
        walk(m, "")
    for e in fds.file[0].enum_type:
        enums[e.name] = e
    return module, messages, enums


def _signature(f):
    """What a reader depends on: number, type (with the message/enum named without its package), label, default."""
    return dict(number=f.number, type=f.type,
                type_name=f.type_name.split(".", 2)[-1] if f.type_name else "", label=f.label,
                default=f.default_value if f.HasField("default_value") else None,
                packed=f.options.packed if f.options.HasField("packed") else None)


def expected_fields(refs):
    """{(message, field): (lineage, reference FieldDescriptorProto)}: NVCaffe's where it has the field, else BVLC's
    (except the renumbered ones)."""
    want = {}
    nv, bv = refs["nvcaffe"][1], refs["bvlc"][1]
    for name in set(nv) | set(bv):
        nv_fields = {f.name: f for f in nv[name].field} if name in nv else {}
        for f in nv_fields.values():
            want[(name, f.name)] = ("nvcaffe", f)
        for f in (bv[name].field if name in bv else []):
            if f.name not in nv_fields and (name, f.name) not in RENUMBERED_BVLC:
                want[(name, f.name)] = ("bvlc", f)
            elif (name, f.name) in BVLC_DEFAULTS:
                want[(name, f.name)] = ("bvlc", f)
    return want


def test_allowed_differences_are_real_collisions(refs):
    """Each renumbered BVLC field's number is taken by another NVCaffe field (the allowed list stays minimal)."""
    nv, bv = refs["nvcaffe"][1], refs["bvlc"][1]
    for message, field in RENUMBERED_BVLC:
        number = {f.name: f.number for f in bv[message].field}[field]
        assert any(f.number == number and f.name != field for f in nv[message].field), (message, field)
    for message, field in BVLC_DEFAULTS:
        a = {f.name: f.default_value for f in nv[message].field}[field]
        b = {f.name: f.default_value for f in bv[message].field}[field]
        assert a != b, (message, field)


def test_every_field_matches_upstream(refs):
    have = refs["ours"][1]
    problems = []
    for (message, field), (lineage, ref) in sorted(expected_fields(refs).items()):
        if message not in have:
            problems.append("missing message %s (%s)" % (message, lineage))
            continue
        mine = {f.name: f for f in have[message].field}.get(field)
        if mine is None:
            problems.append("missing field %s.%s (%s)" % (message, field, lineage))
        elif _signature(mine) != _signature(ref):
            problems.append("%s.%s: ours %s, %s %s" % (message, field, _signature(mine), lineage, _signature(ref)))
    for message, field in RENUMBERED_BVLC:
        mine = {f.name: f for f in have[message].field}
        assert field in mine, "renumbered BVLC field %s.%s is gone" % (message, field)
    assert not problems, "\n".join(problems)


def test_every_enum_value_matches_upstream(refs):
    have = refs["ours"][2]
    problems = []
    for lineage in REFERENCES:
        for name, enum in refs[lineage][2].items():
            mine = {v.name: v.number for v in have[name].value} if name in have else {}
            problems += ["%s.%s = %d (%s): ours %s" % (name, v.name, v.number, lineage, mine.get(v.name))
                         for v in enum.value if mine.get(v.name) != v.number]
    assert not problems, "\n".join(problems)


def test_our_numbers_are_unique_per_message(refs):
    for name, m in refs["ours"][1].items():
        numbers = [f.number for f in m.field]
        assert len(numbers) == len(set(numbers)), name


# ---- binary files written with each reference schema, read with ours ---------------------------------------------

_SCALARS = {FD.TYPE_DOUBLE: 2.5, FD.TYPE_FLOAT: 1.5, FD.TYPE_INT64: -7, FD.TYPE_UINT64: 7, FD.TYPE_INT32: -3,
            FD.TYPE_UINT32: 3, FD.TYPE_SINT32: -5, FD.TYPE_SINT64: -9, FD.TYPE_FIXED32: 11, FD.TYPE_FIXED64: 13,
            FD.TYPE_SFIXED32: -11, FD.TYPE_SFIXED64: -13}


def _value(field, k):
    """A non-default value of `field`'s type (k varies repeated entries)."""
    if field.type == FD.TYPE_BOOL:
        return not field.default_value if k == 0 else bool(k % 2)
    if field.type == FD.TYPE_ENUM:
        values = [v.number for v in field.enum_type.values if v.number != field.default_value] or [field.default_value]
        return values[k % len(values)]
    if field.type == FD.TYPE_STRING:
        return "%s-%d" % (field.name, k)
    if field.type == FD.TYPE_BYTES:
        return bytes([k, 255, 0, 7])
    base = _SCALARS[field.type]
    return (field.default_value or 0) + base + k


def fill(msg, skip, depth=0):
    """Set every field of `msg` (two entries per repeated field) to non-default values, sub-messages to depth 2."""
    for field in msg.DESCRIPTOR.fields:
        if (msg.DESCRIPTOR.name, field.name) in skip:
            continue
        if field.type == FD.TYPE_MESSAGE:
            if depth >= 2:
                continue
            for k in range(2 if field.is_repeated else 1):
                sub = getattr(msg, field.name).add() if field.is_repeated else getattr(msg, field.name)
                fill(sub, skip, depth + 1)
                sub.SetInParent()
        elif field.is_repeated:
            getattr(msg, field.name).extend(_value(field, k) for k in range(2))
        else:
            setattr(msg, field.name, _value(field, 0))
    return msg


def assert_same(ref, mine, path):
    """Every field set in `ref` reads back in `mine` under the same name with the same value."""
    for field, value in ref.ListFields():
        where = "%s.%s" % (path, field.name)
        got = getattr(mine, field.name)
        if field.type == FD.TYPE_MESSAGE:
            if field.is_repeated:
                assert len(got) == len(value), where
                for i, (a, b) in enumerate(zip(value, got)):
                    assert_same(a, b, "%s[%d]" % (where, i))
            else:
                assert mine.HasField(field.name), where
                assert_same(value, got, where)
        elif field.is_repeated:
            assert list(got) == list(value), where
        else:
            assert mine.HasField(field.name) and got == value, (where, got, value)


def _message_names():
    names = []
    for lineage, file in REFERENCES.items():
        text = (REFERENCE / file).read_text() if REFERENCE.is_dir() else ""
        names += [(lineage, m) for m in re.findall(r"^message\s+(\w+)", text, re.M)]
    return names


@pytest.mark.parametrize("lineage,message", _message_names())
def test_reference_binary_reads_field_for_field(refs, lineage, message):
    module = refs[lineage][0]
    skip = RENUMBERED_BVLC if lineage == "bvlc" else set()
    written = fill(getattr(module, message)(), skip)
    data = written.SerializeToString()
    read = getattr(ours, message).FromString(data)
    assert_same(written, read, message)
    # Nothing left unknown or reinterpreted: ours writes the very same bytes back.
    assert read.SerializeToString() == data


def test_renumbered_bvlc_fields_are_skipped_not_misread(refs):
    """A BVLC file's clip_param (148) must not turn into NVCaffe's backward_math on our side."""
    bvlc = refs["bvlc"][0]
    layer = bvlc.LayerParameter(name="c", type="Clip", clip_param=bvlc.ClipParameter(min=-1, max=1))
    read = ours.LayerParameter.FromString(layer.SerializeToString())
    assert read.name == "c" and not read.HasField("clip_param") and not read.HasField("backward_math")
