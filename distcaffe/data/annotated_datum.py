"""SSD's AnnotatedDatum records (a Datum plus labelled, normalized boxes) and label maps.

A record's boxes travel as `Boxes`: parallel arrays of group label, instance id, corners (K, 4, normalized to
[0, 1]) and difficult flags, in the record's group-then-annotation order (the order of the label rows the
AnnotatedData layer emits). Writing groups boxes by label in order of first appearance, as SSD's
convert_annoset does.
"""
import numpy as np
from ..errors import DataError, ParseError
from ..io.text import parse_text
from ..proto import caffe_pb2
from .datum import datum_to_array, parse_record

F32 = np.float32
BBOX = caffe_pb2.AnnotatedDatum.BBOX


class Boxes:
    """Labelled normalized boxes of one image (parallel arrays)."""

    __slots__ = ("labels", "instances", "corners", "difficult")

    def __init__(self, labels, instances, corners, difficult):
        self.labels = np.asarray(labels, np.int64).reshape(-1)
        self.instances = np.asarray(instances, np.int64).reshape(-1)
        self.corners = np.asarray(corners, F32).reshape(-1, 4)
        self.difficult = np.asarray(difficult, bool).reshape(-1)

    def __len__(self):
        return self.labels.size

    def take(self, keep, corners=None):
        """The boxes where `keep` is true (optionally with replaced corners for all of them)."""
        c = self.corners if corners is None else corners
        return Boxes(self.labels[keep], self.instances[keep], c[keep], self.difficult[keep])

    def rows(self, item):
        """(K, 8) label rows [item, label, instance, xmin, ymin, xmax, ymax, difficult]."""
        out = np.empty((len(self), 8), F32)
        out[:, 0], out[:, 1], out[:, 2] = item, self.labels, self.instances
        out[:, 3:7], out[:, 7] = self.corners, self.difficult
        return out


def parse_annotated(value, where):
    """An AnnotatedDatum from a record's bytes (a DataError naming the record otherwise)."""
    anno = parse_record(caffe_pb2.AnnotatedDatum(), value, where)
    if not anno.HasField("datum") or not (anno.datum.data or anno.datum.float_data):
        raise DataError("%s: record is not an AnnotatedDatum with image data (convert_annoset writes those; "
                        "a plain Datum LMDB belongs to a Data layer)" % where)
    return anno


def annotated_to_record(anno, where, color=None):
    """((C, H, W) image, Boxes) of an AnnotatedDatum."""
    if anno.type != BBOX:
        raise DataError("%s: unknown annotation type %d (only BBOX)" % (where, anno.type))
    labels, instances, corners, difficult = [], [], [], []
    for group in anno.annotation_group:
        for a in group.annotation:
            b = a.bbox
            labels.append(group.group_label)
            instances.append(a.instance_id)
            corners.append((b.xmin, b.ymin, b.xmax, b.ymax))
            difficult.append(b.difficult)
    return datum_to_array(anno.datum, where, color), Boxes(labels, instances, corners, difficult)


def make_annotated(datum, boxes):
    """An AnnotatedDatum (type BBOX) of a Datum and Boxes, grouped by label in order of first appearance."""
    anno = caffe_pb2.AnnotatedDatum(type=BBOX)
    anno.datum.CopyFrom(datum)
    groups = {}
    for label, inst, (x0, y0, x1, y1), diff in zip(boxes.labels.tolist(), boxes.instances.tolist(),
                                                   boxes.corners.tolist(), boxes.difficult.tolist()):
        group = groups.get(label)
        if group is None:
            group = groups[label] = anno.annotation_group.add(group_label=label)
        a = group.annotation.add(instance_id=inst)
        a.bbox.xmin, a.bbox.ymin, a.bbox.xmax, a.bbox.ymax, a.bbox.difficult = x0, y0, x1, y1, diff
    return anno


def read_label_map(path, what="label map"):
    """A LabelMap prototxt (item { name label display_name }), checked for duplicate names and labels."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise DataError("%s %s cannot be read: %s" % (what, path, e.strerror)) from None
    try:
        label_map = parse_text(text, caffe_pb2.LabelMap, filename=str(path), what="LabelMap")
    except ParseError as e:
        raise DataError("%s: %s" % (what, e)) from None
    names, labels = set(), set()
    for item in label_map.item:
        if item.name in names or item.label in labels:
            raise DataError("%s %s: duplicate name '%s' or label %d" % (what, path, item.name, item.label))
        names.add(item.name)
        labels.add(item.label)
    return label_map
