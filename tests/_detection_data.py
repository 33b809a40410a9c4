"""Small generated detection data sets for the tests: coloured rectangles on noise, written as PNG images with
VOC XML (or SSD JSON / txt) annotations, then converted by our own convert_annoset."""
import json
import os

import numpy as np

LABEL_MAP = """item { name: "none_of_the_above" label: 0 display_name: "background" }
item { name: "box" label: 1 display_name: "box" }
item { name: "disc" label: 2 display_name: "disc" }
"""


def make_images(root, n=4, size=(40, 56), seed=0, names=("box", "disc")):
    """n PNGs with 1-2 objects each (named from `names`); returns [(name, width, height, [(label_name, x0, y0, x1, y1, difficult)])]."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    h, w = size
    out = []
    os.makedirs(root, exist_ok=True)
    for i in range(n):
        img = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        objects = []
        for k in range(1 + i % 2):
            x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
            x1, y1 = int(x0 + rng.integers(8, w // 2)), int(y0 + rng.integers(8, h // 2))
            img[y0:y1, x0:x1] = (200, 40 + 100 * k, 90)
            objects.append((names[k], x0, y0, x1, y1, int(i == 3 and k == 1)))
        name = "img%d.png" % i
        Image.fromarray(img).save(os.path.join(root, name))
        out.append((name, w, h, objects))
    return out


def write_voc(root, images):
    lines = []
    for name, w, h, objects in images:
        objs = "".join("<object><name>%s</name><difficult>%d</difficult><bndbox><xmin>%d</xmin><ymin>%d</ymin>"
                       "<xmax>%d</xmax><ymax>%d</ymax></bndbox></object>" % (o[0], o[5], o[1], o[2], o[3], o[4])
                       for o in objects)
        xml = name.replace(".png", ".xml")
        with open(os.path.join(root, xml), "w") as f:
            f.write("<annotation><size><width>%d</width><height>%d</height><depth>3</depth></size>%s</annotation>"
                    % (w, h, objs))
        lines.append("%s %s" % (name, xml))
    return _list(root, "voc.txt", lines)


def write_json(root, images):
    lines = []
    ids = {"box": 1, "disc": 2}
    for name, w, h, objects in images:
        doc = {"image": {"width": w, "height": h},
               "annotation": [{"bbox": [o[1], o[2], o[3] - o[1], o[4] - o[2]], "category_id": ids[o[0]],
                               "iscrowd": o[5]} for o in objects]}
        path = name.replace(".png", ".json")
        with open(os.path.join(root, path), "w") as f:
            json.dump(doc, f)
        lines.append("%s %s" % (name, path))
    return _list(root, "json.txt", lines)


def _list(root, name, lines):
    path = os.path.join(root, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def label_maps(root):
    """(names label map, COCO-style category-id label map) files."""
    names = os.path.join(root, "labelmap.prototxt")
    with open(names, "w") as f:
        f.write(LABEL_MAP)
    ids = os.path.join(root, "labelmap_ids.prototxt")
    with open(ids, "w") as f:
        f.write(LABEL_MAP.replace('"box"', '"1"', 1).replace('"disc"', '"2"', 1))
    return names, ids


def annoset(tmp, n=4, size=(40, 56), seed=0, backend="lmdb", names=("box", "disc")):
    """An AnnotatedDatum database of n generated images (VOC XML route); returns (db path, label map, images)."""
    from distcaffe.data.convert_annoset import convert_annoset
    root = os.path.join(str(tmp), "voc")
    images = make_images(root, n, size, seed, names)
    names, _ = label_maps(root)
    db = os.path.join(str(tmp), "annoset_%s" % backend)
    convert_annoset(root + "/", write_voc(root, images), db, "xml", names, encoded=True, backend=backend)
    return db, names, images
