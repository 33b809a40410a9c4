"""SSD box arithmetic (NVCaffe util/bbox_util.cpp) over arrays: encode/decode against priors, Jaccard overlap,
prior-to-ground-truth matching (bipartite, then per prediction), greedy NMS and average precision.

Decoding, encoding and overlaps take `xp` and run on the device; matching, NMS and AP are sequential by nature
and run on host numpy arrays (boxes are small next to the feature maps). Box math is float32, as Caffe's
NormalizedBBox fields are floats.
"""
import numpy as np

from ..proto import caffe_pb2

F32 = np.float32
_CODE = caffe_pb2.PriorBoxParameter
_MATCH = caffe_pb2.MultiBoxLossParameter


def decode_boxes(xp, loc, priors, variances, code_type, variance_encoded_in_target):
    """Caffe's DecodeBBox over arrays: `loc` (..., P, 4) offsets, `priors`/`variances` (P, 4) -> decoded corners
    (..., P, 4) and their sizes (0 for inverted boxes), all float32."""
    f32 = np.float32
    pxmin, pymin, pxmax, pymax = (priors[:, k] for k in range(4))
    var = xp.ones_like(variances) if variance_encoded_in_target else variances
    lx0, ly0, lx1, ly1 = (loc[..., k] for k in range(4))
    if code_type == caffe_pb2.PriorBoxParameter.CORNER:
        out = (pxmin + var[:, 0] * lx0, pymin + var[:, 1] * ly0, pxmax + var[:, 2] * lx1, pymax + var[:, 3] * ly1)
    else:
        pw = pxmax - pxmin
        ph = pymax - pymin
        if code_type == caffe_pb2.PriorBoxParameter.CENTER_SIZE:
            pcx = ((pxmin.astype(np.float64) + pxmax) / 2.0).astype(f32)
            pcy = ((pymin.astype(np.float64) + pymax) / 2.0).astype(f32)
            cx = var[:, 0] * lx0 * pw + pcx
            cy = var[:, 1] * ly0 * ph + pcy
            w = (xp.exp(var[:, 2] * lx1) * pw).astype(np.float64)
            h = (xp.exp(var[:, 3] * ly1) * ph).astype(np.float64)
            out = tuple((a + sign * b / 2.0).astype(f32) for a, b, sign in
                        ((cx, w, -1), (cy, h, -1), (cx, w, 1), (cy, h, 1)))
        else:  # CORNER_SIZE
            out = (pxmin + var[:, 0] * lx0 * pw, pymin + var[:, 1] * ly0 * ph,
                   pxmax + var[:, 2] * lx1 * pw, pymax + var[:, 3] * ly1 * ph)
    boxes = xp.stack(out, axis=-1).astype(f32)
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    sizes = xp.where((w < 0) | (h < 0), f32(0), w * h).astype(f32)
    return boxes, sizes


def jaccard_overlap(xp, a, sa, b, sb):
    """Caffe's JaccardOverlap (normalised) between boxes a (A, 4) and b (B, 4) with sizes sa/sb: (A, B) float32."""
    a = a[:, None, :]
    b = b[None, :, :]
    apart = ((b[..., 0] > a[..., 2]) | (b[..., 2] < a[..., 0]) | (b[..., 1] > a[..., 3]) | (b[..., 3] < a[..., 1]))
    iw = xp.minimum(a[..., 2], b[..., 2]) - xp.maximum(a[..., 0], b[..., 0])
    ih = xp.minimum(a[..., 3], b[..., 3]) - xp.maximum(a[..., 1], b[..., 1])
    inter = iw * ih
    valid = ~apart & (iw > 0) & (ih > 0)
    denom = sa[:, None] + sb[None, :] - inter
    return xp.where(valid, inter / xp.where(valid, denom, np.float32(1)), np.float32(0)).astype(np.float32)


def box_sizes(xp, boxes):
    """Caffe's BBoxSize of normalized (..., 4) corner boxes: width * height, 0 for inverted boxes."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return xp.where((w < 0) | (h < 0), F32(0), w * h).astype(F32)


def encode_boxes(xp, gt, priors, variances, code_type, variance_encoded_in_target):
    """Caffe's EncodeBBox row by row: ground truth `gt` (M, 4) against its matched `priors`/`variances` (M, 4)."""
    if code_type == _CODE.CORNER:
        out = gt - priors
    else:
        pw = priors[:, 2] - priors[:, 0]
        ph = priors[:, 3] - priors[:, 1]
        if code_type == _CODE.CENTER_SIZE:
            pcx, pcy = (priors[:, 0] + priors[:, 2]) / F32(2), (priors[:, 1] + priors[:, 3]) / F32(2)
            gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
            gcx, gcy = (gt[:, 0] + gt[:, 2]) / F32(2), (gt[:, 1] + gt[:, 3]) / F32(2)
            out = xp.stack([(gcx - pcx) / pw, (gcy - pcy) / ph, xp.log(gw / pw), xp.log(gh / ph)], axis=1)
        else:  # CORNER_SIZE
            out = (gt - priors) / xp.stack([pw, ph, pw, ph], axis=1)
    if not variance_encoded_in_target:
        out = out / variances
    return out.astype(F32)


def match_boxes(gt, preds, match_type, overlap_threshold, ignore_cross_boundary=False):
    """Caffe's MatchBBox on host arrays: `gt` (G, 4), `preds` (P, 4) -> (match index per prediction, -1 none,
    -2 ignored cross-boundary; overlap per prediction). Bipartite first (the globally best remaining pair, ties
    to the lowest prediction then ground-truth index), then PER_PREDICTION adds each unmatched prediction's best
    ground truth with overlap >= overlap_threshold."""
    num_pred = preds.shape[0]
    match = np.full(num_pred, -1, np.int64)
    overlap_out = np.zeros(num_pred, F32)
    if gt.shape[0] == 0 or num_pred == 0:
        return match, overlap_out
    ov = jaccard_overlap(np, preds, box_sizes(np, preds), gt, box_sizes(np, gt))
    if ignore_cross_boundary:
        cross = ((preds < 0) | (preds > 1)).any(axis=1)
        match[cross] = -2
        ov[cross] = 0
    ov = np.where(ov > F32(1e-6), ov, F32(0))
    overlap_out[:] = ov.max(axis=1)
    work = np.where(ov > 0, ov, F32(-1))
    work[match != -1] = -1
    for _ in range(gt.shape[0]):
        flat = int(np.argmax(work))
        i, j = divmod(flat, gt.shape[0])
        if work[i, j] <= 0:
            break
        match[i], overlap_out[i] = j, work[i, j]
        work[i, :] = -1
        work[:, j] = -1
    if match_type == _MATCH.PER_PREDICTION:
        free = match == -1
        best = ov.argmax(axis=1)
        best_ov = ov[np.arange(num_pred), best]
        take = free & (best_ov >= F32(overlap_threshold)) & (best_ov > 0)
        match[take] = best[take]
        overlap_out[take] = best_ov[take]
    return match, overlap_out


def apply_nms(boxes, scores, threshold, top_k=-1):
    """Caffe's ApplyNMS (host): indices in descending score order, each dropping later boxes overlapping it by
    more than `threshold`; boxes smaller than 1e-5 are skipped; stops at top_k kept."""
    order = list(np.argsort(-scores.astype(np.float64), kind="stable"))
    sizes = box_sizes(np, boxes)
    kept = []
    while order:
        best = order.pop(0)
        if sizes[best] < 1e-5:
            continue
        kept.append(int(best))
        if -1 < top_k <= len(kept):
            break
        if order:
            rest = np.array(order)
            ov = jaccard_overlap(np, boxes[best:best + 1], sizes[best:best + 1], boxes[rest], sizes[rest])[0]
            order = [int(r) for r, o, s in zip(rest, ov, sizes[rest]) if s >= 1e-5 and o <= threshold]
    return kept


def average_precision(tp, fp, num_pos, version):
    """Caffe's ComputeAP: `tp`/`fp` lists of (score, 0/1) for one class, `num_pos` ground truths, `version`
    11point (VOC2007), MaxIntegral (VOC2012/ILSVRC) or Integral. Returns (ap, precision, recall)."""
    if version not in ("11point", "MaxIntegral", "Integral"):
        raise ValueError("unknown ap_version '%s' (known: 11point, MaxIntegral, Integral)" % version)
    if not tp or num_pos == 0:
        return 0.0, [], []
    eps = F32(1e-6)
    order = np.argsort(-np.array([s for s, _ in tp], np.float32), kind="stable")
    tp_cum = np.cumsum([tp[i][1] for i in order])
    order = np.argsort(-np.array([s for s, _ in fp], np.float32), kind="stable")
    fp_cum = np.cumsum([fp[i][1] for i in order])
    prec = [float(F32(t) / F32(t + f)) for t, f in zip(tp_cum, fp_cum)]
    rec = [float(F32(t) / F32(num_pos)) for t in tp_cum]
    n = len(prec)
    ap = F32(0)
    if version == "11point":
        max_precs = [F32(0)] * 11
        start = n - 1
        for j in range(10, -1, -1):
            for i in range(start, -1, -1):
                if rec[i] < j / 10.0:
                    start = i
                    if j > 0:
                        max_precs[j - 1] = max_precs[j]
                    break
                if max_precs[j] < prec[i]:
                    max_precs[j] = F32(prec[i])
        for j in range(10, -1, -1):
            ap += max_precs[j] / F32(11)
    elif version == "MaxIntegral":
        cur_rec, cur_prec = F32(rec[-1]), F32(prec[-1])
        for i in range(n - 2, -1, -1):
            cur_prec = max(F32(prec[i]), cur_prec)
            if abs(cur_rec - F32(rec[i])) > eps:
                ap += cur_prec * abs(cur_rec - F32(rec[i]))
            cur_rec = F32(rec[i])
        ap += cur_rec * cur_prec
    else:
        prev = F32(0)
        for i in range(n):
            if abs(F32(rec[i]) - prev) > eps:
                ap += F32(prec[i]) * abs(F32(rec[i]) - prev)
            prev = F32(rec[i])
    return float(ap), prec, rec
