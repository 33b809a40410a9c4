"""How training is going, on the root rank: Caffe 1.0's display line
`Iteration 100 (12.3 iter/s, 8.1s/100 iters), loss = 0.49` (what tools/extra/parse_log.py and parse_log.sh
read), a second line with the global img/s and the ETA (worded so those tools' regexes skip it), and one row
per display and per test in a metrics file beside the snapshots — `<snapshot_prefix>_metrics.csv` and
`<snapshot_prefix>_metrics.jsonl` — plus TensorBoard event files under `<snapshot_prefix>_tensorboard/` when the
`tensorboard` extra (tensorboardX) is installed."""
import csv
import json
import os
import time

from ..log import get_logger

log = get_logger("solver")
FIXED = ("kind", "iteration", "seconds", "lr", "loss", "img_per_s")


def format_time(seconds):
    """NVCaffe-style elapsed time: `24s`, `3m 5s`, `1h 2m 3s`."""
    s = int(round(seconds))
    h, m, s = s // 3600, (s // 60) % 60, s % 60
    return ("%dh %dm %ds" % (h, m, s)) if h else ("%dm %ds" % (m, s)) if m else ("%ds" % s)


def output_columns(net):
    """Metric names of a net's outputs: the blob name, or `name#k` for each element of a multi-element one."""
    cols = []
    for name in net.outputs:
        count = net.blobs[name].count
        cols += [name] if count == 1 else ["%s#%d" % (name, k) for k in range(count)]
    return cols


def _flat(values):
    """{column: float} from {output name: array of values}."""
    out = {}
    for name, arr in values.items():
        arr = [float(v) for v in arr]
        out.update({name: arr[0]} if len(arr) == 1 else {"%s#%d" % (name, k): v for k, v in enumerate(arr)})
    return out


class MetricsFiles:
    """The CSV and JSON-lines files (and TensorBoard events) of one run. A resumed run keeps the rows before
    the iteration it resumes from and appends; a fresh run starts the files anew."""

    def __init__(self, prefix, columns, resume_iter):
        self.csv_path, self.jsonl_path = prefix + "_metrics.csv", prefix + "_metrics.jsonl"
        self.columns = list(FIXED) + [c for c in columns if c not in FIXED]
        self._keep(resume_iter)
        self._csv_file = open(self.csv_path, "a", newline="")
        self._csv = csv.DictWriter(self._csv_file, self.columns, restval="", extrasaction="ignore")
        if self._csv_file.tell() == 0:
            self._csv.writeheader()
        self._jsonl = open(self.jsonl_path, "a")
        self._tb = None
        try:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(prefix + "_tensorboard", purge_step=resume_iter or None)
        except ImportError:  # the `tensorboard` extra is optional
            pass

    def _keep(self, resume_iter):
        """Drop rows at or after `resume_iter` (all of them for a fresh run, or if the columns changed)."""
        rows = []
        if resume_iter:
            try:
                with open(self.csv_path, newline="") as f:
                    reader = csv.DictReader(f)
                    if reader.fieldnames == self.columns:
                        rows = [r for r in reader if int(r["iteration"]) < resume_iter]
            except (OSError, ValueError, KeyError):
                rows = []
        with open(self.csv_path, "w", newline="") as f:
            if rows:
                writer = csv.DictWriter(f, self.columns)
                writer.writeheader()
                writer.writerows(rows)
        lines = []
        if rows:
            try:
                with open(self.jsonl_path) as f:
                    lines = [ln for ln in f if ln.strip() and json.loads(ln)["iteration"] < resume_iter]
            except (OSError, ValueError, KeyError):
                lines = []
        with open(self.jsonl_path, "w") as f:
            f.writelines(lines)

    def write(self, row):
        self._csv.writerow(row)
        self._csv_file.flush()
        self._jsonl.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key not in ("kind", "iteration", "seconds") and isinstance(value, float):
                    self._tb.add_scalar("%s/%s" % (row["kind"], key), value, row["iteration"])
            self._tb.flush()

    def close(self):
        self._csv_file.close()
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


class Monitor:
    """Display lines and metric rows of one solver on the root rank. `solve` opens the metrics files
    (`files=True`); pycaffe's bare `solver.step(n)` only logs."""

    def __init__(self, solver, files=False):
        self.solver = solver
        self.started = time.perf_counter()
        self.files = None
        if files:
            columns = output_columns(solver.net)
            for net in solver.test_nets:
                columns += [c for c in output_columns(net) if c not in columns]
            self.files = MetricsFiles(solver.param.snapshot_prefix, columns, solver.iter)
        self.begin(solver.iter, solver.iter)

    def begin(self, start_iter, stop_iter):
        """A Step of `stop_iter - start_iter` iterations starts (Caffe's iteration_timer_.Start())."""
        self.stop_iter = stop_iter
        self._last_t, self._last_iter, self._train_s = time.perf_counter(), start_iter, 0.0

    def iteration_done(self, seconds):
        """One training iteration (forward, backward, update) took `seconds`: for img/s without test time."""
        self._train_s += seconds

    def display(self, it, loss, outputs):
        """Log Caffe 1.0's display line, the outputs and the rate line; write a `train` row."""
        s = self.solver
        now = time.perf_counter()
        lapse = now - self._last_t
        done = it - self._last_iter
        log.info("Iteration %d (%g iter/s, %gs/%d iters), loss = %g", it, done / (lapse or 1.0), lapse,
                 s.param.display, loss, stacklevel=2)     # logged as the solver's line, as in Caffe
        s._log_outputs(s.net, "Train", outputs)
        global_batch = s.batch_size() * s.global_batch_multiplier
        img_s = done * global_batch / self._train_s if done and self._train_s > 0 else None
        if done:
            eta = (self.stop_iter - it) * lapse / done
            log.info("    %.4g img/s (global batch %d), %s elapsed, ETA %s to iteration %d", img_s or 0.0,
                     global_batch, format_time(now - self.started), format_time(eta), self.stop_iter, stacklevel=2)
        self._last_t, self._last_iter, self._train_s = now, it, 0.0
        self._row("train", it, dict(_flat(outputs), loss=float(loss), img_per_s=img_s,
                                    lr=self._lr()))

    def test_done(self, test_net_id, it, means):
        """Write a `test<k>` row with a test net's mean outputs."""
        self._row("test%d" % test_net_id, it, _flat(means))

    def _lr(self):
        rate = getattr(self.solver, "get_learning_rate", None)
        return float(rate()) if rate else None

    def final(self, it, loss):
        """The `Iteration N, loss = L` of Solve's extra pass after the last iteration: a last `train` row."""
        self._row("train", it, {"loss": float(loss), "lr": self._lr()})

    def _row(self, kind, it, values):
        if self.files is not None:
            values = {k: float("%.8g" % v) if isinstance(v, float) else v for k, v in values.items()}
            self.files.write(dict(values, kind=kind, iteration=int(it),
                                  seconds=round(time.perf_counter() - self.started, 3)))

    def close(self):
        if self.files is not None:
            self.files.close()
            self.files = None
