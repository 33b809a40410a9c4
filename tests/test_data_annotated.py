"""SSD data: convert_annoset (VOC XML, SSD's COCO JSON, txt) -> AnnotatedDatum LMDB -> AnnotatedData layer, with
box geometry (expand, sampler crops, emit constraint, mirror) checked by hand."""
import numpy as np
import pytest
from google.protobuf import text_format

import distcaffe as caffe
from distcaffe.data import annotation_transform as at
from distcaffe.data.annotated_datum import Boxes, annotated_to_record, parse_annotated
from distcaffe.data.convert_annoset import convert_annoset
from distcaffe.data.db import open_reader
from distcaffe.errors import DataError
from distcaffe.launcher.cli import main
from distcaffe.proto import caffe_pb2
from _detection_data import annoset, label_maps, make_images, write_json, write_voc


def records(db):
    r = open_reader(db, "t")
    out = [annotated_to_record(parse_annotated(r.get(k), "t"), "t") for k in r.keys()]
    r.close()
    return out


def test_convert_annoset_voc_json_txt_agree(tmp_path):
    root = str(tmp_path / "d")
    images = make_images(root, 3)
    names, ids = label_maps(root)
    assert main(["convert_annoset", "-label_type", "xml", "-label_map_file", names, "-encoded", root + "/",
                 write_voc(root, images), str(tmp_path / "voc")]) == 0
    convert_annoset(root + "/", write_json(root, images), str(tmp_path / "json"), "json", ids, encoded=True)
    lines = []
    for name, w, h, objects in images:
        txt = name.replace(".png", ".box")
        with open("%s/%s" % (root, txt), "w") as f:
            f.write("".join("%s %d %d %d %d\n" % (o[0], o[1], o[2], o[3], o[4]) for o in objects))
        lines.append("%s %s" % (name, txt))
    with open(root + "/txt.txt", "w") as f:
        f.write("\n".join(lines))
    convert_annoset(root + "/", root + "/txt.txt", str(tmp_path / "txt"), "txt", names, encoded=True)
    voc, js, txt = records(str(tmp_path / "voc")), records(str(tmp_path / "json")), records(str(tmp_path / "txt"))
    for (img, b), (name, w, h, objects) in zip(voc, images):
        assert img.shape == (3, h, w)
        expect = [[{"box": 1, "disc": 2}[o[0]], o[1] / w, o[2] / h, o[3] / w, o[4] / h] for o in objects]
        got = np.column_stack([b.labels, b.corners])
        np.testing.assert_allclose(sorted(got.tolist()), sorted(expect), rtol=1e-6)
    for a, b in zip(voc, js):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1].corners, b[1].corners)
        np.testing.assert_array_equal(a[1].difficult, b[1].difficult)     # iscrowd -> difficult
    for a, b in zip(voc, txt):
        np.testing.assert_array_equal(a[1].corners, b[1].corners)
    assert voc[3 - 1][1].labels.size >= 1


def test_convert_annoset_errors_are_one_line(tmp_path, capsys):
    root = str(tmp_path / "d")
    images = make_images(root, 1)
    names, _ = label_maps(root)
    lst = write_voc(root, images)
    with open(root + "/img0.xml") as f:
        xml = f.read()
    with open(root + "/img0.xml", "w") as f:
        f.write(xml.replace("<name>box</name>", "<name>zebra</name>"))
    assert main(["convert_annoset", "-label_map_file", names, root + "/", lst, str(tmp_path / "db")]) == 2
    assert "unknown name 'zebra' (not in the label map)" in capsys.readouterr().err
    assert not (tmp_path / "db").exists()
    assert main(["convert_annoset", root + "/", lst, str(tmp_path / "db")]) == 2
    assert "needs -label_map_file" in capsys.readouterr().err


def test_box_geometry_by_hand():
    boxes = Boxes([1, 2, 1], [0, 0, 1], [[.1, .1, .3, .3], [.5, .5, .9, .7], [.05, .6, .15, .9]], [0, 1, 0])
    crop = np.array([0, 0, .6, .6], np.float32)
    out = at.transform_boxes(boxes, crop)
    # box 0 -> (.1/.6, .1/.6, .3/.6, .3/.6); box 1 clipped to (.5/.6, .5/.6, 1, 1); box 2 (.05/.6, 1, ...) is
    # cut to zero height at the crop's edge -> kept only with positive area: y .6/.6 = 1 -> dropped
    np.testing.assert_allclose(out.corners, [[1 / 6, 1 / 6, .5, .5], [5 / 6, 5 / 6, 1, 1]], rtol=1e-6)
    assert out.labels.tolist() == [1, 2] and out.difficult.tolist() == [False, True]
    centre = caffe_pb2.EmitConstraint(emit_type=caffe_pb2.EmitConstraint.CENTER)
    assert at.transform_boxes(boxes, crop, centre).labels.tolist() == [1]       # box 1's centre (.7, .6) is out
    mirrored = at.transform_boxes(boxes, np.array([0, 0, 1, 1], np.float32), mirror=True)
    np.testing.assert_allclose(mirrored.corners[0], [.7, .1, .9, .3], rtol=1e-6)
    # expansion: image placed at offset (x 10, y 5) of a 2x canvas of a 20 x 10 (w x h) image:
    # expand box (-10/20, -5/10, 30/20, 15/10) maps box 0 to ((.1 * 20 + 10) / 40, (.1 * 10 + 5) / 20, ...)
    exp = at.transform_boxes(boxes, np.array([-.5, -.5, 1.5, 1.5], np.float32))
    np.testing.assert_allclose(exp.corners[0], [.3, .3, .4, .4], rtol=1e-6)


def test_crop_image_and_sampler_constraints():
    img = np.arange(2 * 10 * 20).reshape(2, 10, 20)
    np.testing.assert_array_equal(at.crop_image(img, np.array([.25, .2, .75, .9], np.float32)),
                                  img[:, 2:9, 5:15])
    bs = caffe_pb2.BatchSampler(max_sample=1, max_trials=50)
    bs.sampler.min_scale, bs.sampler.max_scale = .3, 1
    bs.sampler.min_aspect_ratio, bs.sampler.max_aspect_ratio = .5, 2
    bs.sample_constraint.min_jaccard_overlap = .5
    boxes = Boxes([1], [0], [[.2, .2, .7, .7]], [0])
    rng = np.random.default_rng(0)
    for _ in range(20):
        for box in at.sample_crops(boxes, [bs, caffe_pb2.BatchSampler(max_sample=1, max_trials=1)], rng):
            assert 0 <= box[0] <= box[2] <= 1 + 1e-6 and 0 <= box[1] <= box[3] <= 1 + 1e-6
            assert box.tolist() == [0, 0, 1, 1] or at.jaccard(boxes.corners, box)[0] >= .5


def test_distortion_keeps_images_close_and_hsv_round_trips():
    img = np.random.default_rng(1).integers(0, 256, (3, 8, 9)).astype(np.uint8)
    back = at.hsv_to_bgr(at.bgr_to_hsv(img))
    assert np.abs(back.astype(int) - img).max() <= 6                      # 8-bit hue/saturation quantisation
    p = caffe_pb2.DistortionParameter(brightness_prob=1, brightness_delta=32)
    out = at.distort(img, p, np.random.default_rng(2))
    delta = out.astype(int) - img
    inside = (img > 40) & (img < 215)
    assert len(np.unique(delta[inside])) == 1 and 0 < abs(delta[inside][0]) <= 32


SSD_TRANSFORM = """transform_param { mirror: true mean_value: 104 mean_value: 117 mean_value: 123
  resize_param { prob: 1 resize_mode: WARP height: 24 width: 32 interp_mode: LINEAR interp_mode: AREA
                 interp_mode: NEAREST interp_mode: CUBIC interp_mode: LANCZOS4 }
  emit_constraint { emit_type: CENTER }
  distort_param { brightness_prob: 0.5 brightness_delta: 32 contrast_prob: 0.5 contrast_lower: 0.5
    contrast_upper: 1.5 hue_prob: 0.5 hue_delta: 18 saturation_prob: 0.5 saturation_lower: 0.5
    saturation_upper: 1.5 random_order_prob: 0.0 }
  expand_param { prob: 0.5 max_expand_ratio: 4.0 } }"""
SAMPLERS = """batch_sampler { max_sample: 1 max_trials: 1 }
  batch_sampler { sampler { min_scale: 0.3 max_scale: 1.0 min_aspect_ratio: 0.5 max_aspect_ratio: 2.0 }
    sample_constraint { min_jaccard_overlap: 0.3 } max_sample: 1 max_trials: 50 }"""


def annotated_net(db, labelmap, batch=3, transform=SSD_TRANSFORM, samplers=SAMPLERS, phase=caffe.TRAIN, extra=""):
    text = ('layer { name: "d" type: "AnnotatedData" top: "data" top: "label" %s data_param { source: "%s" '
            'batch_size: %d %s } annotated_data_param { %s label_map_file: "%s" } }'
            % (transform, db, batch, extra, samplers, labelmap))
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)


def test_annotated_data_without_augmentation_gives_the_boxes_and_pixels(tmp_path):
    db, labelmap, images = annoset(tmp_path, n=4)
    net = annotated_net(db, labelmap, batch=2, transform="transform_param { mean_value: 10 scale: 0.5 }",
                        samplers="", phase=caffe.TEST)
    net.forward()
    rows = net.blobs["label"].data.reshape(-1, 8)
    recs = records(db)
    expect = np.concatenate([np.column_stack([np.full(len(b), i), b.labels, b.instances, b.corners, b.difficult])
                             for i, (_, b) in enumerate(recs[:2])])
    np.testing.assert_allclose(rows, expect, rtol=1e-6)
    np.testing.assert_allclose(net.blobs["data"].data[1], (recs[1][0].astype(np.float32) - 10) * 0.5)
    net.layers[0].close()


def test_ssd_augmentation_batches_are_valid_and_thread_independent(tmp_path):
    db, labelmap, _ = annoset(tmp_path, n=5)
    outs = []
    for threads in (1, 3):
        caffe.set_random_seed(5)
        net = annotated_net(db, labelmap, batch=3, extra="threads: %d" % threads)
        got = []
        for _ in range(4):
            net.forward()
            assert net.blobs["data"].shape == (3, 3, 24, 32)
            rows = net.blobs["label"].data.reshape(-1, 8)
            if rows[0, 0] != -1:
                assert set(rows[:, 0]) <= {0, 1, 2} and set(rows[:, 1]) <= {1, 2}
                assert (rows[:, 3:7] >= 0).all() and (rows[:, 3:7] <= 1).all()
                assert (rows[:, 5] > rows[:, 3]).all() and (rows[:, 6] > rows[:, 4]).all()
            got.append((net.blobs["data"].data.copy(), rows.copy()))
        net.layers[0].close()
        outs.append(got)
    assert sum(int(r[0, 0] != -1) for _, r in outs[0]) >= 2           # boxes survive the augmentation
    for (d1, r1), (d2, r2) in zip(*outs):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(r1, r2)


def test_annotated_data_errors(tmp_path):
    from test_data_layers import make_lmdb
    plain = make_lmdb(tmp_path / "plain", 2)
    with pytest.raises(DataError, match="not an AnnotatedDatum.*belongs to a Data layer"):
        annotated_net(plain, "", samplers="", transform="")
    db, labelmap, _ = annoset(tmp_path, n=2)
    with pytest.raises(DataError, match="'d' .AnnotatedData.: noise_param.saltpepper needs saltpepper_param.value"):
        annotated_net(db, labelmap, transform="transform_param { noise_param { saltpepper: true } }")
    with pytest.raises(DataError, match="'d' .AnnotatedData.: resize_param needs height and width"):
        annotated_net(db, labelmap, transform="transform_param { resize_param { resize_mode: FIT_SMALL_SIZE "
                                              "height: 8 } }")
    with pytest.raises(DataError, match="label_map_file .* cannot be read"):
        annotated_net(db, str(tmp_path / "missing.prototxt"), transform="")
