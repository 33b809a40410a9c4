"""Solver scaffolding (Caffe's Solver): builds the train and test nets, runs iterations with display, testing,
smoothed loss, snapshots and signal actions, and exposes pycaffe's solver API. The update itself lives in
SGDSolver and its subclasses (`apply_update`, `history`, `restore_history`).

Hooks for the distributed engine: `add_callback(cb)` (cb.on_start(solver) before forward/backward,
cb.on_gradients_ready(solver) before the update), `is_root` (False: no display/test lines, no test nets, no
snapshots), `root_barrier` (called on every rank right after each rank-0 duty: test, snapshot),
`global_batch_multiplier` (for the `Solver performance` line), `action_request_function` (Caffe's
SetActionFunction: returns signals.NONE/STOP/SNAPSHOT/SNAPSHOT_STOP) and `gather_states` (every rank's resume
state to the one that snapshots; `resumed_exactly` says whether a restore put this rank's back).
"""
import os
import time

from .. import backend
from ..data.shard import get_shard
from ..errors import SolverError
from ..layers.bbox_util import average_precision
from ..log import get_logger
from ..net import TEST, TRAIN, Net
from ..proto import caffe_pb2
from ..data.progress import ProgressBar
from . import lr_policy, signals, snapshot as snap
from .monitor import Monitor, format_time

log = get_logger("solver")


def load_solver_param(source):
    """(SolverParameter, directory of its file or None) from a path or a SolverParameter."""
    from ..io import read_solver_param, upgrade_solver_param
    if isinstance(source, caffe_pb2.SolverParameter):
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(source)
        return upgrade_solver_param(param), None
    path = os.fspath(source)
    param = read_solver_param(path)
    # BVLC UpgradeSnapshotPrefixProperty: default prefix from the solver file name; a directory gets the stem.
    stem = os.path.splitext(path)[0]
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = stem
    elif os.path.isdir(param.snapshot_prefix):
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, os.path.basename(stem))
    return param, os.path.dirname(os.path.abspath(path))


class _FunctionCallbacks:
    """pycaffe's add_callback(on_start, on_gradients_ready): two no-argument functions as a hook object."""

    def __init__(self, on_start, on_gradients_ready):
        self._start, self._ready = on_start, on_gradients_ready

    def on_start(self, solver):
        if self._start is not None:
            self._start()

    def on_gradients_ready(self, solver):
        if self._ready is not None:
            self._ready()


class _LastEpochs:
    """NVCaffe's test_and_snapshot_last_epochs = N: test and snapshot (scores in the file name) as each of the
    run's last N-1 epochs begins, the final test coming after training; with no known epoch size, once before the
    last iteration."""

    def __init__(self, n, iters):
        self.enabled, self.remaining, self.iters = n > 0, n - 1, iters
        self.epochs = self.passed = 0.0

    def due(self, it, stop_iter):
        if self.enabled and ((self.epochs > 0 and self.passed + self.remaining >= self.epochs)
                             or (self.epochs == 0 and it + 1 == stop_iter and self.remaining > 0)):
            self.remaining -= 1
            return True
        return False

    def measure(self, it, records, global_batch):
        """After iteration `it`'s forward pass: total and passed epochs of the run (records per epoch)."""
        if records:
            self.epochs = float(self.iters * global_batch) / records
            self.passed = float(it * global_batch) / records


class Solver:
    """Caffe's Solver. Subclasses implement `pre_solve`, `apply_update`, `history` and `restore_history`."""

    type = None

    def __init__(self, source, is_root=None, base_dir=None, name=None):
        """`source`: solver prototxt path or SolverParameter; `is_root`: this rank does the tests and snapshots
        (default: pycaffe's solver_rank() is 0); `base_dir`: where relative net files may live (defaults to the
        solver file's directory); `name`: how errors name the solver."""
        self.param, self._dir = load_solver_param(source)
        self._where = "solver %s" % (name or (os.fspath(source) if self._dir else "<SolverParameter>"))
        self._dir = base_dir or self._dir
        self.is_root = backend.solver_rank() == 0 if is_root is None else is_root
        self.root_barrier = None
        self.global_batch_multiplier = 1
        self.callbacks = []
        self.action_request_function = None
        self.gather_states = lambda state: [state]
        self.resumed_exactly = False
        self.requested_early_exit = False
        self._last_snapshot_iter = None
        self.last_scores = []
        self.monitor = None
        self._init()

    # --- scaffolding -----------------------------------------------------------------------------
    def _init(self):
        p = self.param
        log.info("Initializing solver from parameters: \n%s", p)
        if p.average_loss < 1:
            raise SolverError("%s: average_loss should be >= 1 (got %d)" % (self._where, p.average_loss))
        if p.iter_size < 1:
            raise SolverError("%s: iter_size should be >= 1 (got %d)" % (self._where, p.iter_size))
        if p.regularization_type not in ("L1", "L2"):
            raise SolverError("%s: unknown regularization_type '%s' (known: L1, L2)" % (self._where,
                                                                                       p.regularization_type))
        lr_policy.check_policies(p, self._where)
        if p.snapshot:
            self._check_snapshot_dir()
        if p.random_seed >= 0:
            backend.set_random_seed(p.random_seed)
        self.net = self._init_train_net()
        self.test_nets = self._init_test_nets()
        log.info("Solver scaffolding done.")
        self.iter = 0
        self.current_step = 0
        self.smoothed_loss = 0.0
        self._losses = []
        self.pre_solve()

    def _check_snapshot_dir(self):
        """The prefix's directory must be writable (checked when the solver is built if `snapshot` is set, as in
        Caffe, and again as solve() starts whatever `snapshot` says: a SIGTERM or the end of training snapshots
        too); hidden temporary files a killed snapshot left there are removed."""
        if not self.is_root:
            return
        d = os.path.dirname(os.path.abspath(self.param.snapshot_prefix + "_"))
        if not os.path.isdir(d) or not os.access(d, os.W_OK | os.X_OK):
            raise SolverError("%s: cannot write to snapshot prefix '%s': make sure that the directory %s exists and "
                              "is writable" % (self._where, self.param.snapshot_prefix, d))
        for name in snap.stale_temporaries(self.param.snapshot_prefix):
            log.info("Removing %s, left by a snapshot that was interrupted", name)
            try:
                os.unlink(name)
            except OSError:
                pass

    def _path(self, name):
        """A net file as Caffe opens it (relative to the working directory), else relative to the solver file."""
        if self._dir and not os.path.isabs(name) and not os.path.exists(name):
            beside = os.path.join(self._dir, name)
            if os.path.exists(beside):
                return beside
        return name

    def _read_net(self, name):
        from ..io import read_net_param
        return read_net_param(self._path(name))

    def _init_train_net(self):
        p = self.param
        fields = ("net", "net_param", "train_net", "train_net_param")
        given = [f for f in fields if p.HasField(f)]
        if len(given) != 1:
            raise SolverError("%s: SolverParameter must specify exactly one train net using one of these fields: %s "
                              "(found %s)" % (self._where, ", ".join(fields), ", ".join(given) or "none"))
        field = given[0]
        if field.endswith("_param"):
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(getattr(p, field))
            log.info("Creating training net specified in %s.", field)
        else:
            log.info("Creating training net from %s file: %s", field, getattr(p, field))
            net_param = self._read_net(getattr(p, field))
        state = caffe_pb2.NetState(phase=TRAIN)
        state.MergeFrom(net_param.state)
        state.MergeFrom(p.train_state)
        net_param.state.CopyFrom(state)
        return Net(net_param, phase=state.phase)

    def _init_test_nets(self):
        p = self.param
        generic = [f for f in ("net_param", "net") if p.HasField(f)]
        n_explicit = len(p.test_net_param) + len(p.test_net)
        if generic and len(p.test_iter) < n_explicit or not generic and len(p.test_iter) != n_explicit:
            raise SolverError("%s: test_iter must be specified for each test network (%d test_iter, %d test nets%s)"
                              % (self._where, len(p.test_iter), n_explicit,
                                 "" if generic else "; no 'net' to build test nets from"))
        n_total = len(p.test_iter) if generic else n_explicit
        if len(p.test_state) and len(p.test_state) != n_total:
            raise SolverError("%s: test_state must be unspecified or specified once per test net (%d test nets, %d "
                              "test_state)" % (self._where, n_total, len(p.test_state)))
        if n_total and p.test_interval <= 0:
            raise SolverError("%s: test_interval must be > 0 when there are test nets" % self._where)
        if not self.is_root:
            return []
        sources = []
        for tp in p.test_net_param:
            sources.append(("test_net_param", tp))
        for name in p.test_net:
            sources.append(("test_net file: " + name, self._read_net(name)))
        for _ in range(n_total - len(sources)):
            if p.HasField("net_param"):
                sources.append(("net_param", p.net_param))
            else:
                sources.append(("net file: " + p.net, self._read_net(p.net)))
        nets = []
        for i, (what, src) in enumerate(sources):
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(src)
            state = caffe_pb2.NetState(phase=TEST)
            state.MergeFrom(net_param.state)
            if len(p.test_state):
                state.MergeFrom(p.test_state[i])
            net_param.state.CopyFrom(state)
            log.info("Creating test net (#%d) specified by %s", i, what)
            net = Net(net_param, phase=state.phase)
            net.debug_info = p.debug_info
            net.share_with(self.net)
            nets.append(net)
        return nets

    # --- hooks -----------------------------------------------------------------------------------
    def add_callback(self, cb, on_gradients_ready=None):
        """A hook object with on_start(solver) / on_gradients_ready(solver), or pycaffe's pair of
        no-argument functions `add_callback(on_start, on_gradients_ready)`."""
        hook_object = hasattr(cb, "on_start") or hasattr(cb, "on_gradients_ready")
        if on_gradients_ready is not None or (callable(cb) and not hook_object):
            cb = _FunctionCallbacks(cb, on_gradients_ready)
        self.callbacks.append(cb)

    def share_weights(self, net):
        """pycaffe's Solver.share_weights: `net` uses this solver's training weights."""
        net.share_with(self.net)

    @property
    def lr(self):
        """The learning rate of the current iteration (pycaffe's SGDSolver.lr)."""
        return lr_policy.learning_rate(self.param, self.iter, self.current_step)[0]

    def _call(self, hook):
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self)

    def _root_duty(self, fn):
        """Run a rank-0 duty (test, snapshot) on the root only; then every rank meets at the barrier."""
        if self.is_root:
            fn()
        if self.root_barrier is not None:
            self.root_barrier()

    def _requested_action(self):
        return self.action_request_function() if self.action_request_function else signals.NONE

    # --- training loop (Caffe's Step / Solve) ----------------------------------------------------
    def _update_smoothed_loss(self, loss, start_iter):
        avg = self.param.average_loss
        if len(self._losses) < avg:
            self._losses.append(loss)
            n = len(self._losses)
            self.smoothed_loss = (self.smoothed_loss * (n - 1) + loss) / n
        else:
            idx = (self.iter - start_iter) % avg
            self.smoothed_loss += (loss - self._losses[idx]) / avg
            self._losses[idx] = loss

    def step(self, iters):
        """Run `iters` iterations (Caffe's Solver::Step)."""
        p = self.param
        start_iter, stop_iter = self.iter, self.iter + int(iters)
        self._losses, self.smoothed_loss = [], 0.0
        self._perf = []
        if self.is_root and self.monitor is None:
            self.monitor = Monitor(self)                 # pycaffe's bare step(): display lines, no files
        if self.monitor is not None:
            self.monitor.begin(start_iter, stop_iter)
        last_epochs = _LastEpochs(p.test_and_snapshot_last_epochs, stop_iter - start_iter)
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            test_and_snapshot = last_epochs.due(self.iter, stop_iter)
            if test_and_snapshot or (p.test_interval and self.iter % p.test_interval == 0
                                     and (self.iter > 0 or p.test_initialization)):
                self._root_duty(self.test_all)
                if self.requested_early_exit:
                    break
            t0 = time.perf_counter()
            self._call("on_start")
            display = bool(p.display) and self.iter % p.display == 0
            self.net.debug_info = display and p.debug_info
            self.prepare_gradients()
            loss = 0.0
            for _ in range(p.iter_size):
                loss = loss + self.net.forward_backward_device()
            loss /= p.iter_size
            backend.check_later(~backend.xp().isfinite(loss), self._bad_loss_error(loss))
            self._update_smoothed_loss(loss, start_iter)
            last_epochs.measure(self.iter, self._epoch_records(), self.batch_size() * get_shard()[1])
            if display:
                backend.flush_checks()
                if self.is_root:
                    self._display()
            self._call("on_gradients_ready")
            self.apply_update()
            self.iter += 1
            self._perf.append(time.perf_counter() - t0)
            if self.monitor is not None:
                self.monitor.iteration_done(self._perf[-1])
            action = self._requested_action()
            if (p.snapshot and self.iter % p.snapshot == 0) or action in (signals.SNAPSHOT, signals.SNAPSHOT_STOP):
                self._snapshot_all()
            if test_and_snapshot:
                self._snapshot_all(scored=True)
            if action in (signals.STOP, signals.SNAPSHOT_STOP):
                self.requested_early_exit = True
                break
        backend.flush_checks()

    def _bad_loss_error(self, loss):
        """The error for a non-finite loss of this iteration (built only if the device check fails)."""
        it, deferred = self.iter, backend.is_gpu()

        def make():
            what = ("found at the next display/snapshot; the last good snapshot is kept" if deferred
                    else "weights not updated, the last good snapshot is kept")
            return SolverError("iteration %d: the loss of train net '%s' is %s; training stopped (%s)"
                               % (it, self.net.name, float(loss), what))
        return make

    def _epoch_records(self):
        """Records in one epoch of the train net's data (NVCaffe's epoch_count: the smallest data source)."""
        counts = [len(layer.pipeline.source) for layer in self.net.layers if getattr(layer, "pipeline", None)]
        return min(counts) if counts else 0

    def _display(self):
        """Caffe 1.0's display line and the train net outputs, then the rate/ETA line (solvers/monitor.py)."""
        self.monitor.display(self.iter, self.smoothed_loss, {n: backend.to_host(self.net.blobs[n].dev_data).ravel()
                                                             for n in self.net.outputs})

    @staticmethod
    def _log_outputs(net, kind, values):
        """`    Train|Test net output #k: name = v (* w = w*v loss)` for every element of every output."""
        index = 0
        for name in net.outputs:
            weight = net.blob_loss_weights_by_name.get(name, 0.0)
            for v in values[name]:
                extra = " (* %g = %g loss)" % (weight, weight * v) if weight else ""
                log.info("    %s net output #%d: %s = %g%s", kind, index, name, v, extra)
                index += 1

    def solve(self, resume_file=None):
        """Train to max_iter, optionally resuming from a .solverstate (Caffe's Solver::Solve)."""
        p = self.param
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", p.lr_policy)
        self.requested_early_exit = False
        self._check_snapshot_dir()
        started = time.perf_counter()
        if resume_file:
            log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        if self.is_root:
            self._close_monitor()
            self.monitor = Monitor(self, files=True)   # metrics files beside the snapshots
        try:
            self._solve(started)
        finally:
            self._close_monitor()

    def _close_monitor(self):
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None

    def _solve(self, started):
        p = self.param
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self._snapshot_all()
        if self.requested_early_exit:
            log.info("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0:
            loss = self.net.forward_prefilled()
            self._update_smoothed_loss(loss, start_iter)
            if self.is_root:
                log.info("Iteration %d, loss = %g", self.iter, self.smoothed_loss)
                self.monitor.final(self.iter, self.smoothed_loss)
        if p.test_interval and self.iter % p.test_interval == 0:
            self._root_duty(self.test_all)
        if self.is_root:
            self._log_performance()
            log.info("Optimization Done in %s", format_time(time.perf_counter() - started))

    def batch_size(self):
        """Images per iteration on this process: the first top of the first layer, times iter_size."""
        for layer_tops in self.net.top_names.values():
            for name in layer_tops:
                blob = self.net.blobs.get(name)
                if blob is not None and blob.num_axes:
                    return blob.shape[0] * self.param.iter_size
            break
        return self.param.iter_size

    def _log_performance(self):
        """NVCaffe's `Solver performance on device D: R * B = P img/sec` (first 3 iterations skipped)."""
        times = self._perf[3:] if len(self._perf) > 3 else self._perf
        if not times or sum(times) <= 0:
            return
        rate = len(times) / sum(times)
        batch = self.batch_size() * self.global_batch_multiplier
        device = backend._state.device if backend.is_gpu() else "CPU"
        log.info("Solver performance on device %s: %.4g * %d = %.4g img/sec (%d itr in %.4g sec)", device, rate,
                 batch, rate * batch, len(times), sum(times))

    # --- testing ---------------------------------------------------------------------------------
    def test_all(self):
        """Test every test net; `last_scores` keeps the first one's output values (NVCaffe's TestAll scores)."""
        self.last_scores = []
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            means = self.test(i)
            if means and self.monitor is not None:
                self.monitor.test_done(i, self.iter, means)
            if i == 0 and means:
                self.last_scores = [float(v) for name in self.test_nets[0].outputs for v in means[name]]

    def test(self, test_net_id=0):
        """Run test_iter forward passes of a test net and log the mean of every output (Caffe's Test)."""
        p = self.param
        log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        net = self.test_nets[test_net_id]
        net.share_with(self.net)
        iters = p.test_iter[test_net_id]
        if p.eval_type == "detection":
            return self._test_detection(net, iters)
        scores, loss = None, 0.0
        bar = ProgressBar(iters, "batches", desc="Test net #%d" % test_net_id, summary=False)
        for _ in range(iters):
            bar.update()
            action = self._requested_action()
            if action in (signals.SNAPSHOT, signals.SNAPSHOT_STOP):
                self.snapshot()
            if action in (signals.STOP, signals.SNAPSHOT_STOP):
                self.requested_early_exit = True
                log.info("Test interrupted.")
                return None
            iter_loss = net.forward_prefilled()
            if p.test_compute_loss:
                loss += iter_loss
            out = {n: backend.to_host(net.blobs[n].dev_data).astype("float64").ravel() for n in net.outputs}
            scores = out if scores is None else {n: scores[n] + out[n] for n in out}
        bar.finish()
        if p.test_compute_loss:
            log.info("Test loss: %g", loss / iters)
        means = {n: v / iters for n, v in (scores or {}).items()}
        if means:
            self._log_outputs(net, "Test", means)
        return means

    def _test_detection(self, net, iters):
        """NVCaffe's TestDetection: gather the DetectionEvaluate rows of `iters` passes and log each output's
        mAP (ap_version: 11point, MaxIntegral, Integral); returns {output: [mAP]}."""
        p = self.param
        if p.ap_version not in ("11point", "MaxIntegral", "Integral"):
            raise SolverError("%s: unknown ap_version '%s' (known: 11point, MaxIntegral, Integral)"
                              % (self._where, p.ap_version))
        stats = {n: ({}, {}, {}) for n in net.outputs}          # output -> (num_pos, true_pos, false_pos)
        loss = 0.0
        for _ in range(iters):
            if self._requested_action() in (signals.STOP, signals.SNAPSHOT_STOP):
                self.requested_early_exit = True
                log.info("Test interrupted.")
                return None
            loss += net.forward_prefilled()
            for name in net.outputs:
                rows = backend.to_host(net.blobs[name].dev_data).reshape(-1, 5)
                num_pos, tps, fps = stats[name]
                for item, label, score, tp, fp in rows.tolist():
                    label = int(label)
                    if int(item) == -1:
                        num_pos[label] = num_pos.get(label, 0) + int(score)
                    elif int(tp) or int(fp):
                        tps.setdefault(label, []).append((score, int(tp)))
                        fps.setdefault(label, []).append((score, int(fp)))
        if p.test_compute_loss:
            log.info("Test loss: %g", loss / iters)
        means = {}
        for k, name in enumerate(net.outputs):
            num_pos, tps, fps = stats[name]
            aps = {}
            for label, n in sorted(num_pos.items()):
                if label not in tps:
                    log.warning("Missing true_pos for label: %d", label)
                    continue
                aps[label] = average_precision(tps[label], fps[label], n, p.ap_version)[0]
                if p.show_per_class_result:
                    log.info("class AP %d: %g", label, aps[label])
            means[name] = [sum(aps.values()) / len(num_pos) if num_pos else 0.0]
            log.info("    Test net output mAP #%d: %s = %g", k, name, means[name][0])
        return means

    # --- snapshots -------------------------------------------------------------------------------
    def _nets(self):
        """This process's nets by resume-state tag."""
        return dict({"train": self.net}, **{"test%d" % i: net for i, net in enumerate(self.test_nets)})

    def _snapshot_all(self, scored=False):
        """On every rank: gather the ranks' resume states (RNG, data positions); the root writes the snapshot
        (`scored`: only when the last test gave scores, which go into the name)."""
        backend.flush_checks()                       # never snapshot weights a deferred check would refuse
        ranks = self.gather_states(snap.process_state(self._nets()))

        def write():
            if not scored or self.last_scores:
                self.snapshot(self.last_scores if scored else (), ranks)
        self._root_duty(write)

    def snapshot(self, scores=(), ranks=None):
        """Write `<prefix>_iter_<N>.caffemodel` and `.solverstate` (or their .h5 forms); returns the model path.
        `scores` (test_and_snapshot_last_epochs) go into the name as NVCaffe's `_score<i>_<value>`; `ranks`:
        every rank's resume state (default: this process's alone)."""
        if ranks is None:
            ranks = [snap.process_state(self._nets())]
        if self._last_snapshot_iter == (self.iter, tuple(scores)):
            return None
        p = self.param
        hdf5 = p.snapshot_format == caffe_pb2.SolverParameter.HDF5
        base = snap.snapshot_base(p.snapshot_prefix, self.iter, scores)
        if hdf5:
            model = base + ".caffemodel.h5"
            log.info("Snapshotting to HDF5 file %s", model)
            self.net.save_hdf5(model, write_diff=p.snapshot_diff)
        else:
            model = base + ".caffemodel"
            log.info("Snapshotting to binary proto file %s", model)
            self.net.save(model, write_diff=p.snapshot_diff, old_format=p.store_blobs_in_old_format)
        state = base + (".solverstate.h5" if hdf5 else ".solverstate")
        log.info("Snapshotting solver state to %s file %s", "HDF5" if hdf5 else "binary proto", state)
        snap.write_state(state, self.iter, model, self.current_step, self.history, ranks, hdf5=hdf5,
                         old_format=p.store_blobs_in_old_format)
        self._last_snapshot_iter = (self.iter, tuple(scores))
        return model

    def restore(self, path):
        """Continue from a .solverstate(.h5): weights, iteration, lr step, history, and this rank's RNG and data
        positions (warns loudly when the file lacks them)."""
        path = os.fspath(path)
        state = snap.read_state(path)
        if state["learned_net"]:
            self.net.copy_from(snap.resolve_learned_net(path, state["learned_net"]), strict=True)
        self.iter = state["iter"]
        self.current_step = state["current_step"]
        self.restore_history(state["history"], path)
        self.weights_changed()
        self.resumed_exactly = snap.restore_process_state(path, state["resume"], self._nets(), *get_shard())
        self._last_snapshot_iter = (self.iter, ())

    def copy_weights(self, paths):
        """Fine-tuning: load weights from one or more .caffemodel files (comma-separated or a list)."""
        if isinstance(paths, str):
            paths = [p for p in paths.split(",") if p]
        for path in paths:
            log.info("Finetuning from %s", path)
            self.net.copy_from(path)
        self.weights_changed()

    # --- for subclasses ----------------------------------------------------------------------------
    def pre_solve(self):
        """Allocate the update state (history)."""

    def prepare_gradients(self):
        """Called before the forward/backward passes of an iteration (global gradient scale)."""

    def apply_update(self):
        raise NotImplementedError

    def weights_changed(self):
        """The net weights were replaced from outside (restore, fine-tuning): refresh any master copy."""

    @property
    def history(self):
        return []

    def restore_history(self, arrays, path):
        if arrays:
            raise SolverError("%s: has %d history blobs, solver %s keeps none" % (path, len(arrays), self.type))

