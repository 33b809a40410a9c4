"""The SSD300 (VGG16, COCO) zoo nets at batch 1 on a generated AnnotatedDatum LMDB: the TRAIN net's forward +
backward gives a finite MultiBoxLoss and gradients; the TEST net's DetectionOutput rows are
[image, label, score, xmin, ymin, xmax, ymax] and DetectionEvaluate's are [image, label, score, tp, fp]."""
import numpy as np
import pytest

import distcaffe as caffe
from conftest import ZOO
from distcaffe.io import read_net_param
from _detection_data import annoset

SSD = ZOO / "NVIDIA__caffe/models/VGGNet/coco/SSD_300x300"
pytestmark = pytest.mark.slow


def ssd_net(tmp_path, name, phase):
    db, labelmap, images = annoset(tmp_path, n=2, size=(60, 80))
    sizes = tmp_path / "name_size.txt"
    sizes.write_text("".join("%s %d %d\n" % (n, h, w) for n, w, h, _ in images))
    p = read_net_param(str(SSD / name))
    for layer in p.layer:
        if layer.type == "AnnotatedData":
            layer.data_param.source, layer.data_param.batch_size = db, 1
            layer.annotated_data_param.label_map_file = labelmap
        if layer.type == "DetectionEvaluate":
            layer.detection_evaluate_param.name_size_file = str(sizes)
    return caffe.Net(p, phase)


def test_ssd300_train_forward_backward_at_batch_1(zoo, tmp_path):
    caffe.set_random_seed(3)
    net = ssd_net(tmp_path, "train.prototxt", caffe.TRAIN)
    assert net.blobs["data"].shape == (1, 3, 300, 300) and net.blobs["mbox_priorbox"].shape == (1, 2, 8732 * 4)
    loss = float(net.forward()["mbox_loss"])
    assert np.isfinite(loss) and loss > 0
    multibox = net.layer_dict["mbox_loss"]
    assert multibox.num_matches > 0, net.blobs["label"].data       # the augmented image kept its box
    net.backward()
    for name in ("conv1_1", "conv4_3", "fc7"):
        g = net.params[name][0].diff
        assert np.isfinite(g).all() and np.abs(g).sum() > 0, name
    for head in ("_mbox_loc", "_mbox_conf"):                       # the matched / mined priors' prediction heads
        assert sum(float(np.abs(b[0].diff).sum()) for n, b in net.params.items() if n.endswith(head)) > 0, head
    net.layers[0].close()


def test_ssd300_test_net_detections_and_evaluation_rows(zoo, tmp_path):
    caffe.set_random_seed(3)
    net = ssd_net(tmp_path, "test.prototxt", caffe.TEST)
    net.forward()
    det = net.blobs["detection_out"].data
    assert det.shape[:2] == (1, 1) and det.shape[3] == 7
    rows = det.reshape(-1, 7)
    valid = rows[rows[:, 1] != -1]
    assert len(valid) <= 200                                       # keep_top_k
    assert (valid[:, 0] == 0).all() and ((valid[:, 1] >= 1) & (valid[:, 1] <= 80)).all()
    assert ((valid[:, 2] >= 0.01) & (valid[:, 2] <= 1)).all()      # confidence_threshold, softmax scores
    assert (valid[:, 5] >= valid[:, 3]).all() and (valid[:, 6] >= valid[:, 4]).all()
    ev = net.blobs["detection_eval"].data.reshape(-1, 5)
    assert ev.shape[0] == 80 + len(valid)                         # one num_pos row per class, one per detection
    assert (ev[:80, 0] == -1).all() and (ev[80:, 3] + ev[80:, 4] <= 1).all()
    net.layers[0].close()
