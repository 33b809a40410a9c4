"""Large Model Support (IBM Caffe's `-lms` / `-lms_frac`), plus prefetching: device memory as a cache of
host memory, so a net larger than the device trains.

`set_lms(threshold_kb, frac=0.0, budget=None, prefetch=True)` is the process-wide switch (the CLI's flags call
it; pycaffe scripts may too): every Net built afterwards is managed. Arrays larger than `threshold_kb` KB are
fetched only when a layer needs them; smaller ones stay resident (threshold <= 0 turns LMS off; a huge value
manages nothing). LMS engages only when the net is expected to take more than `frac` of the budget.
`budget` is in bytes: the device's free memory on GPU; required on CPU, where numpy holds the "device" side.
"""
from .. import backend
from ..errors import CaffeError
from ..log import get_logger
from .attach import NetLMS, adopt
from .manager import Manager
from .streams import CupyMover, HostMover

log = get_logger("lms")
_config = None
_manager = None


class Config:
    """The switch's values: threshold in bytes, frac, budget in bytes (None: from the device), prefetch, poison."""

    def __init__(self, threshold_kb, frac=0.0, budget=None, prefetch=True, poison=False):
        if not 0.0 <= frac <= 1.0:
            raise CaffeError("-lms_frac must be between 0 and 1, got %g" % frac)
        if budget is not None and budget <= 0:
            raise CaffeError("the LMS budget must be positive, got %d bytes" % budget)
        self.threshold = int(threshold_kb) * 1024
        self.frac, self.budget, self.prefetch, self.poison = float(frac), budget, bool(prefetch), bool(poison)


def set_lms(threshold_kb, frac=0.0, budget=None, prefetch=True, poison=False):
    """Turn Large Model Support on for nets built from now on (threshold_kb <= 0 turns it off)."""
    global _config, _manager
    _manager = None
    _config = Config(threshold_kb, frac, budget, prefetch, poison) if threshold_kb > 0 else None


def enabled():
    return _config is not None


def _budget(cfg):
    if cfg.budget is not None:
        return int(cfg.budget)
    if not backend.is_gpu():
        raise CaffeError("Large Model Support on CPU needs an explicit budget (-lms_budget MiB): there is no device "
                         "memory to size it from")
    free, _total = backend.cupy().cuda.runtime.memGetInfo()
    return int(free * 0.9)


def _new_manager(cfg, budget):
    gpu = backend.is_gpu()
    mover = CupyMover(budget, cfg.poison) if gpu else HostMover(budget, cfg.poison)
    return Manager(budget, cfg.threshold, mover, prefetch=cfg.prefetch)


def attach(net):
    """Manage `net` under the current switch (called by Net after it is built); returns its NetLMS or None."""
    global _manager
    cfg = _config
    if cfg is None:
        return None
    budget = _budget(cfg)
    footprint = sum(sa.size * sa.dtype.itemsize for sa in _arrays(net))
    if footprint <= cfg.frac * budget:
        log.info("Large Model Support not engaged for net %s: it needs %s, under -lms_frac %g of the %s budget",
                 net.name, _mb(footprint), cfg.frac, _mb(budget))
        return None
    if _manager is None:
        _manager = _new_manager(cfg, budget)
    first = len(_manager.entries)
    lms = NetLMS(net, _manager, reserve_workspace=not backend.is_gpu())
    lms.check_budget(_manager.budget)
    entries = _manager.entries[first:]             # this net's arrays (a test net shares the train net's manager)
    small = [e for e in entries if e.small]
    label, need = max(lms.working_sets, key=lambda w: w[1]) if lms.working_sets else ("-", 0)
    log.info("Large Model Support: budget %s, threshold %d KB, prefetch %s", _mb(_manager.budget),
             cfg.threshold // 1024, "on" if cfg.prefetch else "off")
    log.info("Large Model Support: %d arrays (%s) kept resident, %d arrays (%s) managed; largest working set %s "
             "(%s)", len(small), _mb(sum(e.nbytes for e in small)), len(entries) - len(small),
             _mb(sum(e.nbytes for e in entries if not e.small)), _mb(need), label)
    return lms


def adopt_history(net, blobs):
    """Put the solver's history blobs (one set per learnable param after another) under the net's manager and
    check that each param's update fits the budget."""
    if net.lms is None:
        return
    for i, b in enumerate(blobs):
        adopt(net.lms.mgr, b._data, "solver history %d" % i, keep=True)
    net.lms.plan_updates(blobs)
    net.lms.check_budget(net.lms.mgr.budget)


def report(net):
    """The log line with the peak accounted device memory and the copies so far."""
    if net is None or net.lms is None:
        return None
    s = net.lms.mgr.stats()
    log.info("Large Model Support: peak device memory %s of the %s budget; %d copies in (%s), %d copies out (%s)",
             _mb(s["peak"]), _mb(s["budget"]), s["h2d"], _mb(s["h2d_bytes"]), s["d2h"], _mb(s["d2h_bytes"]))
    return s


def _arrays(net):
    seen = {}
    for b in list(net._blobs) + [p for layer in net.layers for p in layer.blobs]:
        for sa in (b._data, b._diff):
            seen[id(sa)] = sa
    return seen.values()


def _mb(nbytes):
    return "%.1f MB" % (nbytes / 1e6)


__all__ = ["Config", "set_lms", "enabled", "attach", "adopt_history", "report"]
