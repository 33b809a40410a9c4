"""R-CNN's WindowData layer (BVLC window_data_layer.cpp): batches of image windows warped to crop_size.

The window file lists, per image, `# index`, the path (under root_folder), `channels height width`, the window
count and one `label overlap x1 y1 x2 y2` line per window (0-based inclusive pixels). Windows with overlap >=
fg_threshold are foreground (their label), below bg_threshold background (label 0). Each batch takes
int(batch_size * fg_fraction) foreground windows after the background ones, each drawn at random, optionally
mirrored; a window grows by context_pad pixels of context at crop_size (crop_mode "square" first makes it
square), is clipped to the image, warped with OpenCV's INTER_LINEAR and placed on a zero canvas where the
clipped part falls, then (x - mean) * scale (mean_file centre, or mean_value). crop_size, mirror and the mean
come from transform_param; scale from window_data_param.
"""
import numpy as np

from ..data.datum import read_image
from ..data.resize import LINEAR, resize
from ..errors import DataError
from .base import Layer, register
from .data_layers import _layer_seed

F32 = np.float32


def read_window_file(path, root, fg_threshold, bg_threshold, what):
    """([(image path, (channels, height, width))], foreground windows, background windows); windows are rows
    [image_index, label, overlap, x1, y1, x2, y2]."""
    try:
        with open(path) as f:
            words = f.read().split()
    except OSError as e:
        raise DataError("%s: cannot read window file %s: %s" % (what, path, e.strerror)) from None
    if not words:
        raise DataError("%s: window file %s is empty" % (what, path))
    images, fg, bg = {}, [], []
    pos = 0
    try:
        while pos < len(words):
            if words[pos] != "#":
                raise DataError("%s: window file %s: expected '#' before image %d, got '%s'"
                                % (what, path, len(images), words[pos]))
            index, image = int(words[pos + 1]), root + words[pos + 2]
            size = tuple(int(v) for v in words[pos + 3:pos + 6])
            if len(size) != 3:
                raise IndexError
            count = int(words[pos + 6])
            pos += 7
            images[index] = (image, size)
            for _ in range(count):
                label, overlap = int(words[pos]), float(words[pos + 1])
                box = [int(v) for v in words[pos + 2:pos + 6]]
                if len(box) != 4:
                    raise IndexError
                pos += 6
                if overlap >= fg_threshold:
                    if label <= 0:
                        raise DataError("%s: window file %s: foreground window of image %d has label %d (must be "
                                        "> 0)" % (what, path, index, label))
                    fg.append([index, label, overlap] + box)
                elif overlap < bg_threshold:
                    bg.append([index, 0, 0] + box)
    except (ValueError, IndexError):
        raise DataError("%s: window file %s is malformed near word %d" % (what, path, pos)) from None
    return images, np.array(fg, np.float64).reshape(-1, 7), np.array(bg, np.float64).reshape(-1, 7)


@register("WindowData")
class WindowDataLayer(Layer):
    """Foreground/background windows of the images in a window file, for R-CNN fine-tuning; tops data, label."""

    exact_num_bottom = 0
    exact_num_top = 2

    def layer_setup(self, bottom, top):
        p, tp = self.layer_param.window_data_param, self.layer_param.transform_param
        self.what = "layer '%s' (WindowData)" % self.name
        self.param = p
        self.crop = int(tp.crop_size)
        if self.crop <= 0:
            raise DataError("%s: transform_param.crop_size must be positive" % self.what)
        self.images, self.fg, self.bg = read_window_file(p.source, p.root_folder, p.fg_threshold, p.bg_threshold,
                                                         self.what)
        if not len(self.fg) or not len(self.bg):
            raise DataError("%s: window file %s has %d foreground and %d background windows; both are needed"
                            % (self.what, p.source, len(self.fg), len(self.bg)))
        self.mirror = tp.mirror
        self.rng = np.random.default_rng(_layer_seed(tp, 0))
        self.cache = {}
        channels = next(iter(self.images.values()))[1][0]
        if p.cache_images:
            for index in self.images:
                self._image(index)
        self.mean = None
        if tp.HasField("mean_file"):
            if len(tp.mean_value):
                raise DataError("%s: cannot specify mean_file and mean_value at the same time" % self.what)
            from .. import io as cio
            try:
                arr = cio.blobproto_to_array(cio.read_blobproto(tp.mean_file))
            except Exception as e:
                raise DataError("%s: cannot read mean_file %s: %s" % (self.what, tp.mean_file, e)) from None
            self.mean = np.asarray(arr, F32).reshape(arr.shape[-3:])
            off = (self.mean.shape[2] - self.crop) // 2
            if off < 0 or self.mean.shape[1] < off + self.crop:
                raise DataError("%s: mean_file is %dx%d, smaller than crop_size %d"
                                % (self.what, self.mean.shape[1], self.mean.shape[2], self.crop))
            self.mean = self.mean[:, off:off + self.crop, off:off + self.crop]
        elif len(tp.mean_value):
            if len(tp.mean_value) not in (1, channels):
                raise DataError("%s: specify either 1 mean_value or as many as channels (%d)" % (self.what, channels))
            self.mean = np.broadcast_to(np.asarray(tp.mean_value, F32).reshape(-1, 1, 1),
                                        (channels, self.crop, self.crop))
        top[0].reshape((p.batch_size, channels, self.crop, self.crop))
        top[1].reshape((p.batch_size,))

    def reshape(self, bottom, top):
        pass

    def _image(self, index):
        img = self.cache.get(index)
        if img is None:
            path = self.images[index][0]
            img = read_image(path, "%s: image %d of %s" % (self.what, index, self.param.source), True)
            if self.param.cache_images:
                self.cache[index] = img
        return img

    def window(self, img, box, do_mirror):
        """One window of `img` as crop_size x crop_size float32 (before mean and scale), BVLC's geometry."""
        p, crop = self.param, self.crop
        c, rows, cols = img.shape
        x1, y1, x2, y2 = (int(v) for v in box)
        pad_w = pad_h = 0
        out_w = out_h = crop
        if p.context_pad > 0 or p.crop_mode == "square":
            context_scale = F32(crop) / F32(crop - 2 * p.context_pad)
            half_h, half_w = F32(y2 - y1 + 1) / F32(2), F32(x2 - x1 + 1) / F32(2)
            cx, cy = F32(x1) + half_w, F32(y1) + half_h
            if p.crop_mode == "square":
                half_h = half_w = max(half_h, half_w)
            x1, x2 = int(np.round(cx - half_w * context_scale)), int(np.round(cx + half_w * context_scale))
            y1, y2 = int(np.round(cy - half_h * context_scale)), int(np.round(cy + half_h * context_scale))
            unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
            px1, py1 = max(0, -x1), max(0, -y1)
            px2, py2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
            x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
            sx, sy = F32(crop) / F32(unclipped_w), F32(crop) / F32(unclipped_h)
            out_w, out_h = int(np.round(F32(x2 - x1 + 1) * sx)), int(np.round(F32(y2 - y1 + 1) * sy))
            px1, px2 = int(np.round(F32(px1) * sx)), int(np.round(F32(px2) * sx))
            py1 = int(np.round(F32(py1) * sy))
            pad_h, pad_w = py1, (px2 if do_mirror else px1)
            out_h, out_w = min(out_h, crop - pad_h), min(out_w, crop - pad_w)
        if not (0 <= x1 <= x2 < cols and 0 <= y1 <= y2 < rows):
            raise DataError("%s: window (%d, %d, %d, %d) lies outside its %dx%d image"
                            % (self.what, x1, y1, x2, y2, cols, rows))
        warped = resize(np.ascontiguousarray(img[:, y1:y2 + 1, x1:x2 + 1]), out_h, out_w, LINEAR)
        if do_mirror:
            warped = warped[:, :, ::-1]
        out = np.zeros((c, crop, crop), F32)
        out[:, pad_h:pad_h + out_h, pad_w:pad_w + out_w] = warped
        return out, (pad_h, pad_w, out_h, out_w)

    def forward(self, bottom, top):
        p = self.param
        n = p.batch_size
        num_fg = int(F32(n) * F32(p.fg_fraction))
        data = np.zeros(tuple(top[0].shape), F32)
        labels = np.zeros(n, F32)
        item = 0
        for pool, count in ((self.bg, n - num_fg), (self.fg, num_fg)):
            for _ in range(count):
                w = pool[int(self.rng.integers(len(pool)))]
                do_mirror = bool(self.mirror and self.rng.integers(2))
                out, (ph, pw, oh, ow) = self.window(self._image(int(w[0])), w[3:7], do_mirror)
                region = (slice(None), slice(ph, ph + oh), slice(pw, pw + ow))
                if self.mean is not None:
                    out[region] -= self.mean[region]
                data[item] = out * F32(p.scale)
                labels[item] = w[1]
                item += 1
        top[0].mut_dev_data[...] = self.xp.asarray(data.astype(self.dtype, copy=False))
        top[1].mut_dev_data[...] = self.xp.asarray(labels)
