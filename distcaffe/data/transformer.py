"""Caffe's DataTransformer (BVLC + NVCaffe): random resize/stretch, crop, mirror, mean, scale — per batch.

Order as in NVCaffe's data_transformer: (1) random resize / aspect ratio / stretch of each image
(`img_rand_resize_*`, `rand_resize_ratio_*`, `*_stretch_*`, OpenCV interpolation); (2) crop: random in TRAIN,
centre in TEST; (3) `(x - mean) * scale` with the mean taken at the crop's source pixels (BVLC) or, when
the image was resized, the mean image's centre crop (NVCaffe); (4) mirror. Steps 2-4 run on a whole
batch at once through `xp` (numpy, or cupy with `use_gpu_transform` in GPU mode). Randomness comes from the
numpy Generator passed in, so a batch's transform depends only on the seed and the batch number.
"""
import numpy as np

from ..errors import DataError
from ..proto import caffe_pb2
from .resize import resize

TRAIN = caffe_pb2.TRAIN


class Plan:
    """The random choices and sizes of one batch: uniform uint8/float (N, C, H, W) input, crop offsets, mirrors."""

    __slots__ = ("batch", "offsets", "mirror", "out_hw")

    def __init__(self, batch, offsets, mirror, out_hw):
        self.batch, self.offsets, self.mirror, self.out_hw = batch, offsets, mirror, out_hw


class DataTransformer:
    """Transforms lists of (C, H, W) records into float batches according to a TransformationParameter."""

    def __init__(self, param, phase, what="data layer"):
        self.param = param
        self.phase = phase
        self.what = what
        # NVCaffe: crop_h / crop_w (when > 0) replace crop_size for that side; a crop needs both sides.
        self.crop_h = int(param.crop_h or param.crop_size)
        self.crop_w = int(param.crop_w or param.crop_size)
        if bool(self.crop_h) != bool(self.crop_w):
            raise DataError("%s: transform_param sets only one of crop_h/crop_w (%d/%d); set both, or crop_size"
                            % (what, param.crop_h, param.crop_w))
        self.crop = (self.crop_h, self.crop_w) if self.crop_h else None
        if param.force_color and param.force_gray:
            raise DataError("%s: transform_param cannot set both force_color and force_gray" % what)
        self.color = True if param.force_color else (False if param.force_gray else None)
        self.mean = None
        self.mean_values = np.asarray(param.mean_value, dtype=np.float32)
        if param.HasField("mean_file"):
            if len(param.mean_value):
                raise DataError("%s: cannot specify mean_file and mean_value at the same time" % what)
            from .. import io as cio
            try:
                arr = cio.blobproto_to_array(cio.read_blobproto(param.mean_file), where=param.mean_file)
            except Exception as e:
                raise DataError("%s: cannot read mean_file %s: %s" % (what, param.mean_file, e)) from None
            self.mean = np.asarray(arr, dtype=np.float32).reshape(arr.shape[-3:])
        lo, hi = param.img_rand_resize_lower, param.img_rand_resize_upper
        if hi and lo > hi:
            raise DataError("%s: img_rand_resize_upper (%d) can't be less than img_rand_resize_lower (%d)"
                            % (what, hi, lo))
        names = ("rand_resize_ratio_lower", "rand_resize_ratio_upper", "vertical_stretch_lower",
                 "vertical_stretch_upper", "horizontal_stretch_lower", "horizontal_stretch_upper")
        self.resize_enabled = bool(lo or hi or any(param.HasField(n) for n in names))

    # --- step 1: NVCaffe's image_random_resize (per image, host) ---------------------------------------
    def random_resize_shape(self, height, width, rng):
        """New (height, width) of NVCaffe's image_random_resize for an image of this size."""
        p = self.param
        new_size = min(height, width)
        if p.img_rand_resize_lower > 0 and p.img_rand_resize_upper > 0:
            span = p.img_rand_resize_upper - p.img_rand_resize_lower
            new_size = p.img_rand_resize_lower + int(rng.integers(span + 1))
        scale = np.float32(new_size) / np.float32(height if width >= height else width)
        fh, fw = np.float32(scale * np.float32(height)), np.float32(scale * np.float32(width))
        if p.rand_resize_ratio_lower >= 1 and p.rand_resize_ratio_upper > 1:
            ratio = np.float32(rng.uniform(p.rand_resize_ratio_lower, p.rand_resize_ratio_upper))
            if fw > fh or (fw == fh and rng.integers(2)):
                fw = np.float32(fh * ratio)
            else:
                fh = np.float32(fw * ratio)
        if p.vertical_stretch_lower > 0 and p.vertical_stretch_upper > 0:
            fh = np.float32(fh * np.float32(rng.uniform(p.vertical_stretch_lower, p.vertical_stretch_upper)))
        if p.horizontal_stretch_lower > 0 and p.horizontal_stretch_upper > 0:
            fw = np.float32(fw * np.float32(rng.uniform(p.horizontal_stretch_lower, p.horizontal_stretch_upper)))
        new_h = max(self.crop_h, int(np.floor(fh + 0.5)))      # std::lround (values are positive)
        new_w = max(self.crop_w, int(np.floor(fw + 0.5)))
        if not p.allow_upscale:
            new_h, new_w = min(new_h, height), min(new_w, width)
        return new_h, new_w

    def random_resize(self, img, rng):
        h, w = img.shape[1:]
        nh, nw = self.random_resize_shape(h, w, rng)
        if (nh, nw) == (h, w):
            return img
        down = nh <= h and nw <= w
        algo = self.param.interpolation_algo_down if down else self.param.interpolation_algo_up
        return resize(img, nh, nw, algo)

    # --- step 2: plan the crop and mirror of a batch ----------------------------------------------------
    def plan(self, items, rng, keys=None):
        """Random choices for a list of (C, H, W) records (resizing them first when enabled)."""
        keys = keys or ["record %d" % i for i in range(len(items))]
        if self.resize_enabled:
            items = [self.random_resize(x, rng) for x in items]
        n = len(items)
        mirror = rng.integers(0, 2, n).astype(bool) if self.param.mirror else np.zeros(n, bool)
        shapes = {x.shape for x in items}
        if len(shapes) == 1:
            c, h, w = items[0].shape
            oh, ow = self._out_hw(h, w, keys[0])
            offsets = self._offsets(rng, n, h, w)
            batch = np.stack(items)
        else:
            if not self.crop:
                raise DataError("%s: records of different sizes in one batch (%s is %s, %s is %s); set crop_size "
                                "or resize the images" % (self.what, keys[0], "x".join(map(str, items[0].shape)),
                                                          keys[-1], "x".join(map(str, items[-1].shape))))
            crops = []
            for x, key in zip(items, keys):
                oh, ow = self._out_hw(x.shape[1], x.shape[2], key)
                (dh, dw), = self._offsets(rng, 1, x.shape[1], x.shape[2])
                crops.append(x[:, dh:dh + oh, dw:dw + ow])
            batch = np.stack(crops)
            offsets = np.zeros((n, 2), np.int64)
        return Plan(batch, offsets, mirror, (oh, ow))

    def _out_hw(self, h, w, key):
        if not self.crop:
            return h, w
        if self.crop_h > h or self.crop_w > w:
            size = ("crop_size %d" % self.crop_h if self.crop_h == self.crop_w
                    else "crop_h x crop_w %dx%d" % self.crop)
            raise DataError("%s: %s is larger than the image %s (%dx%d)" % (self.what, size, key, h, w))
        return self.crop

    def _offsets(self, rng, n, h, w):
        if not self.crop:
            return np.zeros((n, 2), np.int64)
        if self.phase == TRAIN:
            return np.stack([rng.integers(0, h - self.crop_h + 1, n), rng.integers(0, w - self.crop_w + 1, n)],
                            axis=1)
        return np.tile([(h - self.crop_h) // 2, (w - self.crop_w) // 2], (n, 1))

    # --- steps 3-4: crop, mean, scale, mirror on a whole batch -----------------------------------------
    def apply(self, plan, xp=np, dtype=np.float32):
        """The transformed batch (N, C, oh, ow) as an `xp` array of `dtype`: each record's crop (a view,
        reversed along W when mirrored) is copied once into the float batch, then mean and scale apply."""
        batch = plan.batch if xp is np else xp.asarray(plan.batch)
        n, c, h, w = batch.shape
        oh, ow = plan.out_hw
        mean = self._mean(c, h, w, xp)
        per_item_mean = mean is not None and mean.ndim == 3
        if (oh, ow) == (h, w) and not plan.mirror.any():
            x = batch.astype(np.float32)
            if per_item_mean:
                x -= mean[None]
        else:
            x = xp.empty((n, c, oh, ow), np.float32)
            for i, ((dh, dw), flip) in enumerate(zip(plan.offsets.tolist(), plan.mirror.tolist())):
                cols = slice(dw + ow - 1, dw - 1 if dw else None, -1) if flip else slice(dw, dw + ow)
                x[i] = batch[i, :, dh:dh + oh, cols]
                if per_item_mean:
                    x[i] -= mean[:, dh:dh + oh, cols]
        if mean is not None and mean.ndim == 1:
            x -= mean[None, :, None, None]
        if self.param.scale != 1:
            x *= np.float32(self.param.scale)
        return x.astype(dtype, copy=False)

    def _mean(self, c, h, w, xp):
        """Mean image in the batch's source coordinates (C, H, W), per-channel values (C,), or None."""
        if self.mean is not None:
            m = self.mean
            if m.shape[0] != c:
                raise DataError("%s: mean_file has %d channels, the data %d" % (self.what, m.shape[0], c))
            if m.shape[1:] != (h, w):             # resized or individually cropped records: NVCaffe's centre crop
                if m.shape[1] < h or m.shape[2] < w:
                    raise DataError("%s: mean_file is %dx%d, the data %dx%d" % ((self.what,) + m.shape[1:] + (h, w)))
                dh, dw = (m.shape[1] - h) // 2, (m.shape[2] - w) // 2
                m = m[:, dh:dh + h, dw:dw + w]
            return xp.asarray(np.ascontiguousarray(m))
        if len(self.mean_values):
            if len(self.mean_values) not in (1, c):
                raise DataError("%s: specify either 1 mean_value or as many as channels (%d), got %d"
                                % (self.what, c, len(self.mean_values)))
            return xp.asarray(np.broadcast_to(self.mean_values, (c,)).astype(np.float32))
        return None

    def output_shape(self, sample_shape, key="the first record"):
        """(C, H, W) of a transformed record of this shape (Caffe's InferBlobShape, with its crop checks)."""
        c, h, w = sample_shape
        if self.crop:
            return (c,) + self._out_hw(h, w, key)
        if self.resize_enabled:
            raise DataError("%s: random resize needs crop_size (the output size would vary)" % self.what)
        return c, h, w
