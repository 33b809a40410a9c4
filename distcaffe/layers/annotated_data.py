"""SSD's AnnotatedData layer (NVCaffe annotated_data_layer.cpp): AnnotatedDatum records of an LMDB/LevelDB,
augmented and transformed per distcaffe.data.annotation_transform; tops data (N, C, H, W) and label
(1, 1, R, 8) rows [item, label, instance, xmin, ymin, xmax, ymax, difficult] ((1, 1, 1, 8) of -1 when no box
survives). Reading, sharding, shuffling, threads and resume come from the Data layer's prefetch pipeline; each
batch's randomness is seeded by its number, so batches are identical for any thread count.
`annotated_data_param.label_map_file` is read and checked (its labels are what convert_annoset wrote).
"""
import numpy as np

from ..data.annotated_datum import BBOX, annotated_to_record, parse_annotated, read_label_map
from ..data.annotation_transform import AnnotatedTransformer
from ..data.prefetch import Batch, Pipeline
from ..data.shard import get_shard
from ..data.sources import DBSource
from ..errors import DataError
from .base import register
from .data_layers import _PrefetchingLayer, _layer_seed

F32 = np.float32


class AnnotatedDBSource(DBSource):
    """AnnotatedDatum records of a database: read(i) -> ((C, H, W) image, Boxes)."""

    def read(self, i):
        where = self.key(i)
        return annotated_to_record(parse_annotated(self.reader.get(self.keys[i]), where), where, self.color)


class AnnotatedPipeline(Pipeline):
    """The prefetch pipeline with SSD's per-image augmentation and (R, 8) box rows as labels."""

    def _make_batch(self, b):
        idx = self.batch_indices(b)
        records = self._records(idx)
        rng = np.random.default_rng([self.seed, b])
        t = self.transformer
        images, rows = [], []
        for item, ((img, boxes), i) in enumerate(zip(records, idx)):
            img, boxes = t.augment(img, boxes, rng)
            out, boxes = t.transform(img, boxes, rng)
            if images and out.shape != images[0].shape:
                raise DataError("%s: %s transforms to %s, the batch's first record to %s; set resize_param (WARP "
                                "or FIT_LARGE_SIZE_AND_PAD), a crop, or batch_size 1" % (self.what, self.source.key(int(i)), out.shape, images[0].shape))
            images.append(out)
            rows.append(boxes.rows(item))
        labels = np.concatenate(rows) if rows else np.zeros((0, 8), F32)
        if not len(labels):
            labels = np.full((1, 8), -1, F32)
        return Batch(b, np.stack(images), None, labels.reshape(1, 1, -1, 8))


@register("AnnotatedData")
class AnnotatedDataLayer(_PrefetchingLayer):
    """Images with labelled boxes for SSD training and testing (data_param + annotated_data_param)."""

    def layer_setup(self, bottom, top):
        what = "layer '%s' (%s)" % (self.name, self.type)
        dp, ap, tp = self.layer_param.data_param, self.layer_param.annotated_data_param, \
            self.layer_param.transform_param
        if not dp.source:
            raise DataError("%s: data_param.source is not set" % what)
        if ap.HasField("anno_type") and ap.anno_type != BBOX:
            raise DataError("%s: unknown anno_type %d (only BBOX)" % (what, ap.anno_type))
        if ap.label_map_file:
            self.label_map = read_label_map(ap.label_map_file, "%s: label_map_file" % what)
        self.transformer = AnnotatedTransformer(tp, ap.batch_sampler, self.phase, what)
        color = True if tp.force_color else (False if tp.force_gray else None)
        backend = "leveldb" if dp.HasField("backend") and dp.backend == dp.LEVELDB else "lmdb"
        source = AnnotatedDBSource(dp.source, what, color, backend)
        rank, world = get_shard()
        first = int(rank) % len(source)
        sample, boxes = source.read(first)
        self.device_transform = False
        top[0].reshape((dp.batch_size,) + self.transformer.output_shape(sample.shape))
        if len(top) > 1:   # the tops first: a batch too big to hold is refused before threads start on it
            top[1].reshape((1, 1, max(1, len(boxes)), 8))
        self.pipeline = AnnotatedPipeline(source, dp.batch_size, self.transformer, _layer_seed(tp, rank), what,
                                          threads=dp.threads, parser_threads=dp.parser_threads,
                                          prefetch=dp.prefetch, cache=dp.cache, precache=dp.precache,
                                          shuffle=dp.shuffle, rand_skip=dp.rand_skip, shard=(rank, world),
                                          batch_nbytes=top[0].count * np.dtype(self.dtype).itemsize)

    def forward(self, bottom, top):
        batch = self.pipeline.next()
        xp = self.xp
        if tuple(top[0].shape) != batch.data.shape:
            top[0].reshape(batch.data.shape)
        top[0].mut_dev_data[...] = xp.asarray(batch.data)
        if len(top) > 1:
            if tuple(top[1].shape) != batch.labels.shape:
                top[1].reshape(batch.labels.shape)
            top[1].mut_dev_data[...] = xp.asarray(batch.labels)
