"""SSD's convert_annoset: a list of `<image> <annotation>` lines -> an LMDB (or LevelDB) of AnnotatedDatum.

Annotations (`label_type`): `xml` (PASCAL VOC: size, object name / difficult / bndbox in pixels), `json`
(SSD's per-image COCO file: {"image": {"width", "height"}, "annotation": [{"bbox": [x, y, w, h],
"category_id", "iscrowd"}]}, pixels) or `txt` (one `label xmin ymin xmax ymax` line per box, pixels). Names
and category ids map to labels through the label map (a txt label may also be a plain integer). Boxes are
normalized by the annotation's image size; keys are `%08d_<image>` as SSD writes them.
"""
import json
import os
import xml.etree.ElementTree as ET

import numpy as np

from ..errors import DataError
from ..log import get_logger
from .annotated_datum import Boxes, make_annotated, read_label_map
from .datum import read_image
from .db import open_writer
from .progress import ProgressBar
from .tools import image_datum

log = get_logger("data")
LABEL_TYPES = ("xml", "json", "txt")


def _read_list(path):
    try:
        with open(path) as f:
            lines = [line.split() for line in f if line.strip()]
    except OSError as e:
        raise DataError("annotation list %s cannot be read: %s" % (path, e.strerror)) from None
    for n, parts in enumerate(lines):
        if len(parts) != 2:
            raise DataError("annotation list %s line %d: expected '<image> <annotation>', got %r"
                            % (path, n + 1, " ".join(parts)))
    return lines


def _label(name_to_label, name, where):
    if name in name_to_label:
        return name_to_label[name]
    raise DataError("%s: unknown name '%s' (not in the label map)" % (where, name))


def _xml(path, name_to_label):
    where = "VOC annotation %s" % path
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise DataError("%s cannot be read: %s" % (where, e)) from None
    size = root.find("size")
    try:
        width, height = float(size.findtext("width")), float(size.findtext("height"))
    except (AttributeError, TypeError, ValueError):
        raise DataError("%s: missing size/width or size/height" % where) from None
    objects = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        try:
            px = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            raise DataError("%s: object without a numeric bndbox" % where) from None
        objects.append((_label(name_to_label, (obj.findtext("name") or "").strip(), where), px,
                        (obj.findtext("difficult") or "0").strip() == "1"))
    return width, height, objects


def _json(path, name_to_label):
    where = "JSON annotation %s" % path
    try:
        with open(path) as f:
            doc = json.load(f)
        width, height = float(doc["image"]["width"]), float(doc["image"]["height"])
        objects = []
        for a in doc.get("annotation", []):
            x, y, w, h = (float(v) for v in a["bbox"])
            objects.append((_label(name_to_label, str(a["category_id"]), where), [x, y, x + w, y + h],
                            bool(a.get("iscrowd", 0))))
    except OSError as e:
        raise DataError("%s cannot be read: %s" % (where, e.strerror)) from None
    except (ValueError, KeyError, TypeError) as e:
        raise DataError("%s: expected SSD's per-image COCO layout (image.width/height, annotation[].bbox/"
                        "category_id): %s" % (where, e)) from None
    return width, height, objects


def _txt(path, name_to_label, width, height):
    where = "text annotation %s" % path
    objects = []
    try:
        with open(path) as f:
            for n, line in enumerate(f):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 5:
                    raise DataError("%s line %d: expected 'label xmin ymin xmax ymax'" % (where, n + 1))
                name = parts[0]
                if name in name_to_label or not name.lstrip("-").isdigit():
                    label = _label(name_to_label, name, "%s line %d" % (where, n + 1))
                else:
                    label = int(name)
                objects.append((label, [float(v) for v in parts[1:]], False))
    except OSError as e:
        raise DataError("%s cannot be read: %s" % (where, e.strerror)) from None
    except ValueError:
        raise DataError("%s: box coordinates must be numbers" % where) from None
    return width, height, objects


def _boxes(width, height, objects, where):
    if width <= 0 or height <= 0:
        raise DataError("%s: image size %gx%g is not positive" % (where, width, height))
    labels, corners, difficult = [], [], []
    instances, count = [], {}
    for label, (x0, y0, x1, y1), diff in objects:
        if x1 < x0 or y1 < y0:
            raise DataError("%s: box (%g, %g, %g, %g) has xmax < xmin or ymax < ymin" % (where, x0, y0, x1, y1))
        labels.append(label)
        instances.append(count.get(label, 0))
        count[label] = instances[-1] + 1
        corners.append((x0 / width, y0 / height, x1 / width, y1 / height))
        difficult.append(diff)
    return Boxes(labels, instances, corners, difficult)


def convert_annoset(root, list_file, db, label_type="xml", label_map_file="", resize_height=0, resize_width=0,
                    gray=False, encoded=True, encode_type="", shuffle=False, seed=0, force=False, backend="lmdb"):
    """Write the AnnotatedDatum database; returns the number of records written."""
    if label_type not in LABEL_TYPES:
        raise DataError("unknown label_type '%s' (known: xml, json, txt)" % label_type)
    name_to_label = {}
    if label_map_file:
        name_to_label = {item.name: item.label for item in read_label_map(label_map_file).item}
    elif label_type != "txt":
        raise DataError("label_type %s needs -label_map_file (names to labels)" % label_type)
    lines = _read_list(list_file)
    if shuffle:
        lines = [lines[i] for i in np.random.default_rng(seed).permutation(len(lines))]
    log.info("A total of %d images.", len(lines))
    bar = ProgressBar(len(lines), "files")
    with open_writer(db, backend, force) as out:
        for line_id, (image, anno) in enumerate(lines):
            img_path, anno_path = os.path.join(root, image), os.path.join(root, anno)
            where = "%s line %d (%s)" % (list_file, line_id + 1, img_path)
            enc = (encode_type or image.rsplit(".", 1)[-1].lower()) if encoded else ""
            datum = image_datum(img_path, 0, resize_height, resize_width, not gray, enc, where)
            if label_type == "xml":
                w, h, objects = _xml(anno_path, name_to_label)
            elif label_type == "json":
                w, h, objects = _json(anno_path, name_to_label)
            else:
                shape = read_image(img_path, where, not gray).shape          # boxes are in original pixels
                w, h, objects = _txt(anno_path, name_to_label, shape[2], shape[1])
            out.put("%08d_%s" % (line_id, image), make_annotated(datum, _boxes(w, h, objects, anno_path))
                    .SerializeToString())
            bar.update()
        bar.finish()
        written = out.count
    log.info("Processed %d files.", written)
    return written
