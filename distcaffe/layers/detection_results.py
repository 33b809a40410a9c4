"""DetectionOutput's `save_output_param` (NVCaffe detection_output_layer.cpp): every num_test_image images, the
detections so far go to result files in output_directory, boxes mapped to each image's pixels through
`resize_param`'s mode (NVCaffe's OutputBBox; name_size_file: "name height width" lines in test order) — VOC: `<prefix><class name>.txt` lines
"image score xmin ymin xmax ymax"; COCO: `<prefix>.json`, a list of {image_id, category_id (class name), bbox
[x, y, w, h], score}; ILSVRC: `<prefix>.txt` lines "image label score xmin ymin xmax ymax". Unlike NVCaffe, an
existing output_directory is kept (only our result files are replaced), and files are written under a
temporary name, then renamed."""
import json
import os

import numpy as np

from ..data import resize_policy
from ..data.annotated_datum import read_label_map
from ..errors import DataError

FORMATS = ("VOC", "COCO", "ILSVRC")


def _number(text):
    """NVCaffe's JSON writer unquotes numbers: a numeric name becomes a number."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _write(path, text):
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class ResultWriter:
    """Collects one test pass's detections and writes them in VOC, COCO or ILSVRC form."""

    def __init__(self, param, num_classes, background_label_id, what):
        self.what, self.num_classes, self.bg = what, num_classes, background_label_id
        self.fmt = param.output_format
        if self.fmt not in FORMATS:
            raise DataError("%s: save_output_param.output_format '%s' is unknown (known: VOC, COCO, ILSVRC)"
                            % (what, self.fmt))
        self.resize = param.resize_param if param.HasField("resize_param") else None
        if self.resize is not None:
            resize_policy.check(self.resize, "%s: save_output_param" % what)
        self.dir, self.prefix = param.output_directory, param.output_name_prefix
        self.names = {item.label: item.name for item in read_label_map(param.label_map_file,
                                                                       "%s: label_map_file" % what).item}
        try:
            with open(param.name_size_file) as f:
                words = f.read().split()
            self.images = [(words[k], int(words[k + 1]), int(words[k + 2])) for k in range(0, len(words) - 2, 3)]
        except (OSError, ValueError) as e:
            raise DataError("%s: name_size_file %s: %s" % (what, param.name_size_file, e)) from None
        self.num_test_image = param.num_test_image if param.HasField("num_test_image") else len(self.images)
        if not 0 < self.num_test_image <= len(self.images):
            raise DataError("%s: num_test_image %d, but name_size_file lists %d images"
                            % (what, self.num_test_image, len(self.images)))
        os.makedirs(self.dir, exist_ok=True)
        self.count, self.detections = 0, []

    def add_image(self, rows):
        """One image's detections, rows [label, score, xmin, ymin, xmax, ymax] (normalized); writes the files
        when num_test_image images are in."""
        name, height, width = self.images[self.count]
        for label, score, *box in rows:
            label = int(label)
            if label not in self.names:
                raise DataError("%s: label %d is not in save_output_param.label_map_file" % (self.what, label))
            x0, y0, x1, y1 = resize_policy.output_boxes(self.resize, height, width, box)[0].tolist()
            bbox = [round(v * 100) / 100.0 for v in (x0, y0, x1 - x0, y1 - y0)]
            self.detections.append((name, label, float(np.float32(score)), bbox))
        self.count += 1
        if self.count % self.num_test_image == 0:
            self.flush()
            self.count = 0

    def flush(self):
        out = os.path.join(self.dir, self.prefix)
        if self.fmt == "COCO":
            dets = [{"image_id": _number(n), "category_id": _number(self.names[lab]), "bbox": b, "score": s}
                    for n, lab, s, b in self.detections]
            _write(out + ".json", json.dumps(dets, indent=2) + "\n")
        elif self.fmt == "ILSVRC":
            _write(out + ".txt", "".join(self._line(n, "%d %g" % (lab, s), b) for n, lab, s, b in self.detections))
        else:
            for c in range(self.num_classes):
                if c != self.bg:
                    lines = [self._line(n, "%g" % s, b) for n, lab, s, b in self.detections if lab == c]
                    _write(out + self.names.get(c, str(c)) + ".txt", "".join(lines))
        self.detections = []

    @staticmethod
    def _line(name, middle, bbox):
        x, y, w, h = (int(v) for v in bbox)
        return "%s %s %d %d %d %d\n" % (name, middle, x, y, x + w, y + h)
