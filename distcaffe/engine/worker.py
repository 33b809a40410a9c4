"""One training process of a data-parallel job: owns one device, its Net and Solver, and a communicator.

Every rank builds the same solver from the same files (fillers seeded with `random_seed`, so weights start
equal), reads its own data shard, and gets rank 0's weights and solver history broadcast before the first
iteration. Gradients are averaged by engine.buckets (overlapping backward); every rank then applies the same
update. Rank 0 alone tests, displays and snapshots; the others wait at `solver.root_barrier`. Signals
(SIGINT/SIGHUP/SIGTERM) are agreed on by all ranks inside the gradient allreduce, so all stop together.
"""
import hashlib
import os
import time
import traceback
from dataclasses import dataclass, fields

import numpy as np

from distcaffe import backend
from distcaffe.errors import CaffeError
from distcaffe.log import get_logger, set_quiet
from distcaffe.proto import caffe_pb2

from .buckets import GradientReducer
from .communicator import CollectiveError

log = get_logger("engine")
BATCH_SEMANTICS = ("bvlc", "nvcaffe")
COMMS = ("auto", "single", "mpi", "nccl", "ray")
# data layer parameter fields that carry a `batch_size`
_BATCH_FIELDS = ("data_param", "image_data_param", "hdf5_data_param", "memory_data_param", "window_data_param")


@dataclass
class TrainOptions:
    """What `distcaffe train` passes to the engine (flag names as Caffe/distcaffe spell them)."""

    gpu: str = None               # -gpu: None (CPU), "all", "0,1"
    weights: str = None           # -weights: comma-separated .caffemodel files to fine-tune from
    snapshot: str = None          # -snapshot: .solverstate to resume from
    batch_semantics: str = "bvlc"  # bvlc: global batch = batch x ranks; nvcaffe: batch split over a node's GPUs
    comm: str = "auto"            # auto | single | mpi | nccl | ray
    reduce_buckets: int = None    # overrides the net's NetParameter.reduce_buckets (NVCaffe, default 6)
    sigint_effect: str = "stop"
    sighup_effect: str = "snapshot"
    ray: str = None               # --ray auto|ADDRESS
    cpu_workers: int = 0          # --cpu-workers N: N CPU ranks (local processes or Ray actors)
    placement: str = "PACK"       # Ray placement group strategy: PACK or SPREAD
    level: int = 0                # -level / -stage: the train net's NetState, as in `caffe train`
    stage: str = ""
    share_blobs: bool = True      # -share_blobs: Net.share_diffs and Net.share_data

    @classmethod
    def from_any(cls, obj=None, **overrides):
        """Options from a TrainOptions, a dict or an argparse Namespace (unknown attributes ignored)."""
        if isinstance(obj, cls) and not overrides:
            return obj
        src = obj if isinstance(obj, dict) else vars(obj) if obj is not None else {}
        src = {str(k).replace("-", "_"): v for k, v in src.items()}
        values = {f.name: src[f.name] for f in fields(cls) if src.get(f.name) not in (None, "")}
        values.update(overrides)
        opts = cls(**values)
        try:
            opts.cpu_workers = int(opts.cpu_workers)
            opts.level = int(opts.level)
            opts.reduce_buckets = None if opts.reduce_buckets is None else int(opts.reduce_buckets)
        except ValueError as e:
            raise CaffeError("--cpu-workers and -reduce_buckets take integers (%s)" % e) from None
        if opts.batch_semantics not in BATCH_SEMANTICS:
            raise CaffeError("-batch_semantics must be one of %s (got '%s')" % (", ".join(BATCH_SEMANTICS),
                                                                               opts.batch_semantics))
        if opts.comm not in COMMS:
            raise CaffeError("-comm must be one of %s (got '%s')" % (", ".join(COMMS), opts.comm))
        if str(opts.placement).upper() not in ("PACK", "SPREAD"):
            raise CaffeError("--placement must be PACK or SPREAD (got '%s')" % opts.placement)
        return opts


def make_communicator(kind, world_size, device):
    """The communicator for this rank: single for one rank; NCCL on GPUs when cupy has it; else MPI."""
    if kind == "single" or (kind == "auto" and world_size <= 1):
        from .comm_single import SingleCommunicator
        return SingleCommunicator()
    if kind == "nccl" or (kind == "auto" and device is not None and _nccl_usable()):
        from .comm_mpi import MPICommunicator
        from .comm_nccl import NCCLCommunicator
        return NCCLCommunicator(MPICommunicator(), device)
    if kind in ("mpi", "auto"):
        from .comm_mpi import MPICommunicator
        return MPICommunicator()
    raise CaffeError("communicator '%s' cannot be made here (Ray ranks are started by --ray)" % kind)


def _nccl_usable():
    """NCCL for `auto`: a CUDA device and an NCCL library cupy can load (else MPI carries the gradients)."""
    if not backend.gpu_available():
        return False
    return backend.nccl_module() is not None


# --- batch semantics ------------------------------------------------------------------------------
def _net_source(param, solver_dir):
    """(field, NetParameter) of the solver's train net, read the way the solver reads it."""
    from distcaffe.io import read_net_param
    for field in ("net_param", "train_net_param"):
        if param.HasField(field):
            net = caffe_pb2.NetParameter()
            net.CopyFrom(getattr(param, field))
            return field, net
    for field in ("net", "train_net"):
        if param.HasField(field):
            name = getattr(param, field)
            if solver_dir and not os.path.isabs(name) and not os.path.exists(name):
                beside = os.path.join(solver_dir, name)
                name = beside if os.path.exists(beside) else name
            return field + "_param", read_net_param(name)
    raise CaffeError("solver has no train net (net, net_param, train_net or train_net_param)")


def split_batch(param, solver_dir, parts):
    """NVCaffe semantics: a SolverParameter whose TRAIN data layers read batch_size / `parts` records.

    Layers restricted to the TEST phase keep their batch (only rank 0 tests)."""
    field, net = _net_source(param, solver_dir)
    changed = []
    for lp in net.layer:
        if any(rule.HasField("phase") and rule.phase == caffe_pb2.TEST for rule in lp.include):
            continue
        for f in _BATCH_FIELDS:
            if lp.HasField(f) and getattr(lp, f).batch_size:
                sub = getattr(lp, f)
                if sub.batch_size % parts:
                    raise CaffeError("layer '%s': %s.batch_size %d cannot be split evenly over %d GPUs of a node "
                                     "(-batch_semantics nvcaffe)" % (lp.name, f, sub.batch_size, parts))
                sub.batch_size //= parts
                changed.append(lp.name)
    out = caffe_pb2.SolverParameter()
    out.CopyFrom(param)
    for f in ("net", "net_param", "train_net", "train_net_param"):
        out.ClearField(f)
    getattr(out, field).CopyFrom(net)
    if field == "train_net_param" and param.HasField("net"):
        out.net = param.net
    return out, changed


def _job_texts(param, solver_dir):
    """{"solver": text, "train net": text} of what every rank must share (net file paths and device ids may
    differ between nodes; what the files hold may not)."""
    from google.protobuf import text_format
    _, net = _net_source(param, solver_dir)
    solver = caffe_pb2.SolverParameter()
    solver.CopyFrom(param)
    for f in ("net", "net_param", "train_net", "train_net_param", "device_id", "snapshot_prefix"):
        solver.ClearField(f)
    return {"solver": text_format.MessageToString(solver), "train net": text_format.MessageToString(net)}


def _first_difference(root, mine):
    """`rank 0 has 'X', this rank has 'Y'` for the first line that differs."""
    a, b = root.splitlines(), mine.splitlines()
    for i in range(max(len(a), len(b))):
        x, y = (a[i].strip() if i < len(a) else "(nothing)"), (b[i].strip() if i < len(b) else "(nothing)")
        if x != y:
            return "line %d: rank 0 has '%s', this rank has '%s'" % (i + 1, x[:120], y[:120])
    return "same text"


# --- the worker -----------------------------------------------------------------------------------
class Worker:
    """Runs the solver of one rank; see the module docstring."""

    def __init__(self, comm, options=None, device=None):
        self.comm = comm
        self.options = TrainOptions.from_any(options)
        self.device = device
        self.solver = None
        self.reducer = None
        self._broadcast_done = False
        self._agreed_action = None
        self._local_action = None
        self._iter_starts = []
        self._duty_iters = set()

    @property
    def rank(self):
        return self.comm.rank

    # setup ------------------------------------------------------------------------------------------
    def _select_device(self):
        if self.device is None:
            backend.set_mode_cpu()
        else:
            backend.set_device(self.device)
            backend.set_mode_gpu()

    def build_solver(self, source):
        """Seeds, data shard, batch semantics, then the solver (test nets on rank 0 only)."""
        from distcaffe.data import set_shard
        from distcaffe.solvers import get_solver, load_solver_param
        self._select_device()
        if self.rank != 0 and not os.environ.get("DISTCAFFE_LOG_ALL_RANKS"):
            set_quiet(True)
        param, solver_dir = load_solver_param(source)
        param.train_state.level = int(self.options.level or 0)
        param.train_state.stage.extend(s for s in (self.options.stage or "").split(",") if s)
        self.check_same_job(param, solver_dir)
        if self.options.batch_semantics == "nvcaffe" and self.comm.local_size > 1:
            param, changed = split_batch(param, solver_dir, self.comm.local_size)
            log.info("NVCaffe batch semantics: batch_size of %s divided by %d ranks on this node",
                     ", ".join(changed) or "(no data layer)", self.comm.local_size)
        set_shard(self.comm.rank, self.comm.size)
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        solver = get_solver(param, is_root=self.rank == 0, base_dir=solver_dir, name=name)
        solver.net.share_diffs = solver.net.share_data = bool(self.options.share_blobs)
        seed = solver.param.random_seed
        if seed >= 0:
            backend.set_random_seed(seed + self.rank)  # fillers ran with `seed`; dropout/shuffles now differ
        return solver

    def check_same_job(self, param, solver_dir):
        """Ranks started from different solvers or nets would silently train different models: compare a digest
        of each rank's solver and train net with rank 0's, and stop with one line saying what differs."""
        if self.comm.size == 1:
            return
        texts = _job_texts(param, solver_dir)
        digests = {what: hashlib.sha256(text.encode()).hexdigest() for what, text in texts.items()}
        theirs = self.comm.allgather(digests)
        differ = [r for r, d in enumerate(theirs) if d != theirs[0]]
        root_texts = self.comm.share(texts if differ and self.rank == 0 else None) if differ else None
        if self.rank in differ:
            what = next(w for w in texts if digests[w] != theirs[0][w])
            raise CaffeError("rank %d's %s differs from rank 0's (ranks %s differ): %s"
                             % (self.rank, what, ",".join(map(str, differ)), _first_difference(root_texts[what],
                                                                                                texts[what])))

    def attach(self, solver):
        """Install the gradient reducer, the barrier after rank-0 duties and the agreed signal action."""
        self.solver = solver
        solver.root_barrier = self._root_barrier
        solver.gather_states = self.comm.allgather
        solver.global_batch_multiplier = 1
        self._local_action = solver.action_request_function
        solver.action_request_function = self._take_agreed_action
        if self.comm.size > 1:
            buckets = self.options.reduce_buckets or solver.net.param.reduce_buckets  # NetParameter field (NVCaffe)
            self.reducer = GradientReducer(solver.net, self.comm, buckets, solver.param.iter_size,
                                           flags_fn=self._local_flags, n_flags=2)
            log.info("Gradient buckets: %d (%s elements, in reverse layer order)", len(self.reducer.buckets),
                     ", ".join(str(b.params_size) for b in self.reducer.buckets))
        solver.add_callback(self)
        return solver

    def _root_barrier(self):
        self._duty_iters.add(self.solver.iter)
        self.comm.barrier()

    # signal agreement: SNAPSHOT and STOP counts travel in the gradient allreduce ------------------------
    def _local_flags(self):
        from distcaffe.solvers import signals
        action = self._local_action() if self._local_action else signals.NONE
        return np.array([action in (signals.SNAPSHOT, signals.SNAPSHOT_STOP),
                         action in (signals.STOP, signals.SNAPSHOT_STOP)], np.float64)

    def _take_agreed_action(self):
        """The action all ranks agreed on this iteration (once); NONE elsewhere (e.g. during rank 0's test)."""
        from distcaffe.solvers import signals
        if self.comm.size == 1:
            return self._local_action() if self._local_action else signals.NONE
        flags, self._agreed_action = self._agreed_action, None
        if flags is None:
            return signals.NONE
        snap, stop = flags[0] > 0, flags[1] > 0
        return (signals.SNAPSHOT_STOP if snap and stop else signals.STOP if stop else signals.SNAPSHOT if snap
                else signals.NONE)

    # solver callbacks -----------------------------------------------------------------------------
    def on_start(self, solver):
        self._iter_starts.append((solver.iter, time.perf_counter()))
        if not self._broadcast_done:
            self.broadcast_state(solver)
            if self.options.snapshot and self.rank and not solver.resumed_exactly:
                # the restored RNG is rank 0's; give each rank its own stream again (dropout, shuffles)
                gen = backend.rng().bit_generator
                gen.state = gen.jumped(self.rank).state
            self._broadcast_done = True
        if self.reducer is not None:
            self.reducer.begin_iteration()

    def on_gradients_ready(self, solver):
        if self.reducer is not None:
            self._agreed_action = self.reducer.finish(1.0 / self.comm.size)

    def broadcast_state(self, solver):
        """Rank 0's weights and solver history to every rank; the iteration must already agree."""
        if self.comm.size == 1:
            return
        it = np.array([solver.iter, -solver.iter], np.float64)
        self.comm.allreduce(it)
        if it[0] != solver.iter * self.comm.size:
            raise CollectiveError("ranks start at different iterations (rank %d at %d); every rank must restore "
                                  "the same -snapshot" % (self.rank, solver.iter))
        for blob in solver.net.learnable_params:
            data = blob.mut_dev_data
            buf = data if data.flags.c_contiguous else data.copy()
            self.comm.broadcast(buf.reshape(-1))
            data[...] = buf
        for h in solver.history:
            self.comm.broadcast(h.reshape(-1))
        solver.weights_changed()
        log.info("Broadcast rank 0's weights (%d blobs) and solver history (%d blobs) to %d ranks",
                 len(solver.net.learnable_params), len(solver.history), self.comm.size)

    # running --------------------------------------------------------------------------------------
    def rank_throughput(self, solver):
        """Images/sec of this rank over timed iterations (the first 3 skipped, as NVCaffe; duty iterations
        excluded)."""
        spans = [(b[1] - a[1]) for a, b in zip(self._iter_starts, self._iter_starts[1:])
                 if a[0] not in self._duty_iters and b[0] not in self._duty_iters]
        spans = spans[3:] if len(spans) > 3 else spans
        if not spans:
            return 0.0
        return solver.batch_size() * len(spans) / sum(spans)

    def report_performance(self, solver):
        """Per-device lines and `Overall performance: X img/sec` (sum over ranks), printed by rank 0."""
        rates = np.zeros(self.comm.size, np.float64)
        rates[self.rank] = self.rank_throughput(solver)
        devices = np.zeros(self.comm.size, np.float64)
        devices[self.rank] = -1 if self.device is None else self.device
        self.comm.allreduce(rates)
        self.comm.allreduce(devices)
        if self.rank == 0:
            for r in range(self.comm.size):
                where = "CPU" if devices[r] < 0 else "%d" % devices[r]
                log.info("Rank %d throughput on device %s: %.4g img/sec (batch %d)", r, where, rates[r],
                         solver.batch_size())
            log.info("Overall performance: %.4g img/sec", rates.sum())
        return float(rates.sum())

    def log_global_batch(self, solver):
        per_rank = solver.batch_size()
        log.info("Effective global batch: %d per rank (iter_size %d) x %d ranks = %d (%s semantics)", per_rank,
                 solver.param.iter_size, self.comm.size, per_rank * self.comm.size, self.options.batch_semantics)

    def run(self, source):
        """Build, train to max_iter (or until a signal stops every rank), report; returns the exit code."""
        try:
            solver = self.attach(self.build_solver(source))
            self.log_global_batch(solver)
            if self.options.weights and not self.options.snapshot:
                solver.copy_weights(self.options.weights)
            from distcaffe.solvers.signals import SignalHandler
            with SignalHandler(self.options.sigint_effect, self.options.sighup_effect) as handler:
                self._local_action = handler.requested_action
                solver.solve(resume_file=self.options.snapshot)
            self.report_performance(solver)
            self.comm.close()
            return 0
        except (CaffeError, Exception) as e:  # noqa: B014 - any failure on one rank must stop the whole job
            if self.comm.size == 1:
                raise
            if not isinstance(e, CaffeError):
                traceback.print_exc()   # this rank's own traceback, into its stderr / log, before the summary
            self.comm.abort("%s: %s" % (type(e).__name__, e) if not isinstance(e, CaffeError) else str(e),
                            2 if isinstance(e, CaffeError) else 1)
            return 1


def train_distributed(solver_source, options=None, comm=None, device=None, world_size=None):
    """Train as one rank of a job; returns the exit code. `comm` None: made by make_communicator for
    `world_size` ranks (None: read from an MPI/srun launcher's environment, else 1)."""
    opts = TrainOptions.from_any(options)
    if comm is None:
        if world_size is None:
            world_size = int(os.environ.get("OMPI_COMM_WORLD_SIZE") or os.environ.get("PMI_SIZE")
                             or os.environ.get("SLURM_STEP_NUM_TASKS") or 1)
        comm = make_communicator(opts.comm, world_size, device)
    return Worker(comm, opts, device).run(solver_source)
