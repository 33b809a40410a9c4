"""Caffe's data layers: `Data` (LMDB or LevelDB of Datums), `ImageData` (image list) and `HDF5Data` (HDF5 files).

Data and ImageData read through the threaded prefetch pipeline of distcaffe.data (NVCaffe's `threads`,
`parser_threads`, `prefetch`, `cache`, `shuffle`), each rank reading its own shard (distcaffe.data.set_shard).
Seeds come from the framework RNG at construction (distcaffe.set_random_seed) plus the rank, or from
transform_param.random_seed when set. R-CNN's `WindowData` is in window_data, SSD's `AnnotatedData` in annotated_data.
"""

import numpy as np

from .. import backend
from ..data.prefetch import Pipeline
from ..data.shard import get_shard
from ..data.sources import DBSource, ImageListSource
from ..data.transformer import DataTransformer
from ..errors import DataError, resolved
from .base import Layer, register


def _layer_seed(transform_param, rank):
    if transform_param.random_seed >= 0:
        return int(transform_param.random_seed) + rank
    return int(backend.rng().integers(1 << 31)) + rank


class _PrefetchingLayer(Layer):
    """Shared by Data and ImageData: runs a Pipeline and copies its batches into the tops."""

    exact_num_bottom = 0
    min_top = 1
    max_top = 2
    pipeline = None

    def _make_source(self, what, color):
        raise NotImplementedError

    def _options(self):
        """(batch_size, threads, parser_threads, prefetch, cache, precache, shuffle, rand_skip) of the layer's
        parameters."""
        raise NotImplementedError

    def layer_setup(self, bottom, top):
        what = "layer '%s' (%s)" % (self.name, self.type)
        tp = self.layer_param.transform_param
        self.transformer = DataTransformer(tp, self.phase, what)
        source = self._make_source(what, self.transformer.color)
        batch_size, threads, parsers, prefetch, cache, precache, shuffle, rand_skip = self._options()
        rank, world = get_shard()
        first = int(rank) % len(source)
        sample, _ = source.read(first)
        self.device_transform = bool(tp.use_gpu_transform and backend.is_gpu() and not self.transformer.resize_enabled)
        top[0].reshape((batch_size,) + self.transformer.output_shape(sample.shape, source.key(first)))
        if len(top) > 1:        # the tops first: a batch too big to hold is refused before threads start on it
            top[1].reshape((batch_size,))
        self.pipeline = Pipeline(source, batch_size, self.transformer, _layer_seed(tp, rank), what, threads=threads,
                                 parser_threads=parsers, prefetch=prefetch, cache=cache, precache=precache,
                                 shuffle=shuffle,
                                 rand_skip=rand_skip, shard=(rank, world), device_transform=self.device_transform,
                                 batch_nbytes=top[0].count * np.dtype(self.dtype).itemsize)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        batch = self.pipeline.next()
        xp = self.xp
        data = batch.data if batch.plan is None else self.transformer.apply(batch.plan, xp, self.dtype)
        if tuple(top[0].shape) != tuple(data.shape):
            top[0].reshape(data.shape)
        top[0].mut_dev_data[...] = xp.asarray(data)
        if len(top) > 1:
            top[1].mut_dev_data[...] = xp.asarray(batch.labels)

    def data_state(self):
        """This layer's place in its record stream, for exact resume from a snapshot."""
        return self.pipeline.state()

    def restore_data_state(self, state):
        self.pipeline.restore(state)

    @property
    def wait_seconds(self):
        """Seconds forward has spent waiting for the pipeline (data starvation)."""
        return self.pipeline.wait_seconds

    def close(self):
        if self.pipeline is not None:
            self.pipeline.close()

    def __del__(self):
        if self.pipeline is not None:
            self.pipeline.stop.set()


@register("Data")
class DataLayer(_PrefetchingLayer):
    """Datums from an LMDB or LevelDB (`data_param.source`), transformed per `transform_param`; tops data [+ label]."""

    def _make_source(self, what, color):
        dp = self.layer_param.data_param
        if not dp.source:
            raise DataError("%s: data_param.source is not set" % what)
        backend = "leveldb" if dp.HasField("backend") and dp.backend == dp.LEVELDB else "lmdb"
        return DBSource(dp.source, what, color, backend)

    def _options(self):
        dp = self.layer_param.data_param
        return (dp.batch_size, dp.threads, dp.parser_threads, dp.prefetch, dp.cache, dp.precache, dp.shuffle,
                dp.rand_skip)


@register("ImageData")
class ImageDataLayer(_PrefetchingLayer):
    """Images listed in `image_data_param.source` (`<file> <label>` lines, under root_folder)."""

    def _make_source(self, what, color):
        ip = self.layer_param.image_data_param
        if not ip.source:
            raise DataError("%s: image_data_param.source is not set" % what)
        if bool(ip.new_height) != bool(ip.new_width):
            raise DataError("%s: new_height and new_width must be set together" % what)
        if ip.dataset_share_per_node != 1:
            raise DataError("%s: image_data_param.dataset_share_per_node is not supported (each rank already reads "
                            "only its own shard)" % what)
        return ImageListSource(ip.source, ip.root_folder, what, ip.is_color, ip.new_height, ip.new_width,
                               ip.short_side)

    def _options(self):
        ip = self.layer_param.image_data_param
        return (ip.batch_size, ip.threads, 0, 4, ip.cache, ip.precache, ip.shuffle, ip.rand_skip)


@register("HDF5Data")
class HDF5DataLayer(Layer):
    """Rows of the datasets named by the tops, from the .h5 files listed in `hdf5_data_param.source`
    (Caffe's HDF5DataLayer: file by file, optional shuffling of files and rows; rank r reads rows r::N)."""

    exact_num_bottom = 0
    min_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.hdf5_data_param
        self.what = "layer '%s' (HDF5Data)" % self.name
        try:
            import h5py
        except ImportError:
            raise DataError("%s needs h5py: pip install 'distcaffe[hdf5]'" % self.what) from None
        self.h5py = h5py
        try:
            with open(p.source) as f:
                self.files = [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise DataError("%s: cannot read source list %s: %s%s" % (self.what, p.source, e.strerror,
                                                                          resolved(p.source))) from None
        if not self.files:
            raise DataError("%s: source list %s names no files" % (self.what, p.source))
        if p.batch_size <= 0:
            raise DataError("%s: hdf5_data_param.batch_size must be positive" % self.what)
        self.batch_size = p.batch_size
        self.rank, self.world = get_shard()
        self.rng = np.random.default_rng(int(backend.rng().integers(1 << 31)) + self.rank)
        self.file_order = np.arange(len(self.files))
        if p.shuffle:
            self.rng.shuffle(self.file_order)
        self.file_pos = 0
        self._load(self.file_order[0])
        for t, name in zip(top, self.layer_param.top):
            t.reshape((self.batch_size,) + self.arrays[name].shape[1:])

    def data_state(self):
        """File order, file and row reached, and the RNG as it was when the current file was loaded (its row
        permutation is drawn again on restore)."""
        return {"files": len(self.files), "file_order": [int(i) for i in self.file_order], "file_pos": self.file_pos,
                "row": self.row, "rng_at_load": self._rng_at_load}

    def restore_data_state(self, state):
        if int(state["files"]) != len(self.files):
            raise DataError("%s: the snapshot read %d files from %s; it now lists %d"
                            % (self.what, int(state["files"]), self.layer_param.hdf5_data_param.source,
                               len(self.files)))
        self.file_order = np.asarray(state["file_order"], dtype=np.int64)
        self.file_pos = int(state["file_pos"])
        self.rng.bit_generator.state = state["rng_at_load"]
        self._load(self.file_order[self.file_pos])
        if not 0 <= int(state["row"]) <= self.rows:
            raise DataError("%s: the snapshot stopped at row %d of %s, which now has %d rows for this rank"
                            % (self.what, int(state["row"]), self.files[self.file_order[self.file_pos]], self.rows))
        self.row = int(state["row"])

    def _load(self, file_index):
        """Read every top's dataset of one file (Caffe's LoadHDF5FileData), keeping this rank's rows."""
        path = self.files[file_index]
        self._rng_at_load = self.rng.bit_generator.state
        arrays = {}
        try:
            with self.h5py.File(path, "r") as f:
                for name in self.layer_param.top:
                    if name not in f:
                        raise DataError("%s: %s has no dataset '%s' (datasets: %s)"
                                        % (self.what, path, name, ", ".join(f.keys())))
                    arrays[name] = np.asarray(f[name][()])
        except OSError as e:
            raise DataError("%s: cannot read HDF5 file %s: %s" % (self.what, path, e)) from None
        rows = {a.shape[0] for a in arrays.values()}
        if len(rows) != 1:
            raise DataError("%s: datasets of %s have different numbers of rows: %s"
                            % (self.what, path, {k: v.shape[0] for k, v in arrays.items()}))
        n = rows.pop()
        keep = np.arange(self.rank, n, self.world)
        if not len(keep):
            raise DataError("%s: %s holds %d rows, none for rank %d of %d"
                            % (self.what, path, n, self.rank, self.world))
        if self.layer_param.hdf5_data_param.shuffle:
            keep = self.rng.permutation(keep)
        self.arrays = {k: v[keep] for k, v in arrays.items()}
        self.rows = len(keep)
        self.row = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        out = {name: [] for name in self.layer_param.top}
        need = self.batch_size
        while need:
            take = min(need, self.rows - self.row)
            for name in out:
                out[name].append(self.arrays[name][self.row:self.row + take])
            self.row += take
            need -= take
            if self.row == self.rows:
                self._next_file()
        xp = self.xp
        for t, name in zip(top, self.layer_param.top):
            t.mut_dev_data[...] = xp.asarray(np.concatenate(out[name]).astype(self.dtype, copy=False))

    def _next_file(self):
        self.file_pos += 1
        if self.file_pos == len(self.files):
            self.file_pos = 0
            if self.layer_param.hdf5_data_param.shuffle:
                self.rng.shuffle(self.file_order)
        if len(self.files) > 1 or self.layer_param.hdf5_data_param.shuffle:
            self._load(self.file_order[self.file_pos])
        else:
            self.row = 0
