"""Wiring Large Model Support into a Net: its arrays become managed entries, its layer loop becomes steps.

Each forward/backward pass of layer i is a step keyed ("F"|"B", net, i); the solver brackets each param's
clear/clip/update with `net.memory_step(kind, i)`. Arrays a layer keeps between its forward and backward
(BN's normalized input, LRN's scale, pooling/dropout masks: any array attribute the forward assigns) are
moved into the pool too, so layer-internal buffers live under the same budget; evicting one sets the attribute
to None until the backward fetches it back.
"""
import contextlib

import numpy as np

from .. import backend
from ..blob import HOST, UNINIT
from ..errors import CaffeError
from ..layers.im2col import release_workspace
from ..log import get_logger
from .pool import aligned
from .schedule import layer_workspace, update_workspace

log = get_logger("lms")


def adopt(mgr, sa, name, keep=False):
    """Make a SyncedArray managed: its contents move to the entry's persistent host buffer."""
    if sa.lms is not None or not sa.size:
        return sa.lms[1] if sa.lms is not None else None
    e = mgr.add(name, sa.size, sa.dtype, keep)
    if sa.head != UNINIT:
        e.host[...] = backend.to_host(sa.host())
    sa._host, sa._dev, sa.head, sa.lms = e.host, None, HOST, (mgr, e)
    return e


def _entry(sa):
    return sa.lms[1].id if sa.lms is not None else None


class NetLMS:
    """One net's side of Large Model Support: entries, per-layer steps and the layer-state capture."""

    def __init__(self, net, mgr, reserve_workspace):
        self.net, self.mgr = net, mgr
        self.nid = mgr.nets = getattr(mgr, "nets", -1) + 1
        self.reserve = reserve_workspace
        self.state = {}                     # (layer index, attribute) -> entry
        self._before = {}
        self._adopt_arrays()
        self._plan_layers()
        net.before_forward.append(self._begin_forward)
        net.after_forward.append(self._end_forward)
        net.before_backward.append(self._begin_backward)
        net.after_backward.append(self._end)

    def _adopt_arrays(self):
        net = self.net
        keep = set(net._output_ids) | set(net._input_ids)
        for bid, blob in enumerate(net._blobs):
            adopt(self.mgr, blob._data, "blob '%s' data" % blob.name, keep=bid in keep)
            adopt(self.mgr, blob._diff, "blob '%s' diff" % blob.name)
        for lid, layer in enumerate(net.layers):
            for pid, p in enumerate(layer.blobs):
                adopt(self.mgr, p._data, "layer '%s' param %d data" % (layer.name, pid), keep=True)
                adopt(self.mgr, p._diff, "layer '%s' param %d diff" % (layer.name, pid), keep=True)

    def _ids(self, blobs, part):
        return {i for i in (_entry(getattr(b, part)) for b in blobs) if i is not None}

    def _plan_layers(self):
        """Per layer: overwrite roles, workspace and the contract working set of each pass."""
        net, self.fwd, self.bwd, self.working_sets = self.net, [], [], []
        for i, layer in enumerate(net.layers):
            bottom, top = net._bottom(i), net._top(i)
            params = layer.blobs
            f_ws = layer_workspace(layer, bottom, top, False) if self.reserve else 0
            b_ws = layer_workspace(layer, bottom, top, True) if self.reserve else 0
            f_ow = self._ids(top, "_data") - self._ids(bottom, "_data")
            b_ow = self._ids(bottom, "_diff") - self._ids(top, "_diff")
            f_set = self._ids(bottom + top + params, "_data")
            b_set = f_set | self._ids(bottom + top + params, "_diff") if net.layer_need_backward[i] else set()
            self.fwd.append((f_ow, f_ws, _modes(f_set)))
            self.bwd.append((b_ow, b_ws, _modes(b_set)))
            self.working_sets.append((self._label(i, "forward"), self._bytes(f_set) + f_ws))
            if b_set:
                self.working_sets.append((self._label(i, "backward"), self._bytes(b_set) + b_ws))
        self.history_sets = 0
        self.history = []

    def plan_updates(self, history):
        """Working sets of the solver's per-param updates: data, diff, history and the update's temporaries."""
        params = self.net.learnable_params
        self.history_sets = len(history) // max(1, len(params))
        self.history = [self._ids(history[i::len(params)], "_data") for i in range(len(params))]
        for i, p in enumerate(params):
            ids = self._ids([p], "_data") | self._ids([p], "_diff") | self.history[i]
            self.working_sets.append((self._update_label(i), self._bytes(ids) + self._update_ws(p)))

    def _bytes(self, ids):
        return sum(aligned(self.mgr.entries[i].nbytes) for i in ids)

    def _label(self, i, phase):
        layer = self.net.layers[i]
        return "layer '%s' (%s) %s" % (layer.name, layer.type, phase)

    def _update_label(self, i):
        lid, pid = self.net.param_layer_indices[self.net.learnable_param_ids.index(i)]
        return "the update of layer '%s' param %d" % (self.net._layer_names[lid], pid)

    def _update_ws(self, p):
        return update_workspace(p.count * 4, self.history_sets) if self.reserve else 0

    def check_budget(self, budget):
        """Start-up check: one line naming the first pass whose working set exceeds the budget."""
        resident = self.mgr.resident_bytes()
        for label, need in self.working_sets:
            if need + resident > budget:
                raise CaffeError("Large Model Support: %s needs %d bytes on the device (%d more kept resident), but "
                                 "the budget is %d bytes: the minimum working memory is larger than the budget"
                                 % (label, need, resident, budget))

    # --- net callbacks ---------------------------------------------------------------------------
    def _begin_forward(self, i):
        overwrites, ws, expected = self.fwd[i]
        self._before = {k: id(v) for k, v in vars(self.net.layers[i]).items()}
        self.mgr.begin(("F", self.nid, i), self._label(i, "forward"), ws, overwrites, expected)

    def _end_forward(self, i):
        release_workspace()
        self.mgr.end()
        self._capture_state(i)

    def _layer_state(self, i):
        return [e for (li, _), e in self.state.items() if li == i]

    def _begin_backward(self, i):
        """Pin the layer's kept buffers with the step; they count against its workspace estimate."""
        overwrites, ws, expected = self.bwd[i]
        state = self._layer_state(i)
        held = sum(aligned(e.nbytes) for e in state)
        self.mgr.begin(("B", self.nid, i), self._label(i, "backward"), max(ws - held, 0), overwrites,
                       {**expected, **{e.id: "r" for e in state}})
        for e in state:
            self.mgr.access(e, False)

    def _end(self, i):
        release_workspace()
        self.mgr.end()

    def memory_step(self, kind, i):
        """Context for solver work on learnable param i ('clear', 'clip', 'update')."""
        p = self.net.learnable_params[i]
        diff = self._ids([p], "_diff")
        if kind == "clear":
            ow, ws, uses = diff, 0, diff
        else:
            ow, ws = set(), self._update_ws(p)
            uses = diff | (self._ids([p], "_data") | (self.history[i] if self.history else set())
                           if kind == "update" else set())
        return _Step(self.mgr, (kind, self.nid, i), "%s (%s)" % (self._update_label(i), kind), ws, ow,
                     _modes(uses))

    # --- layer-internal buffers ------------------------------------------------------------------
    def _capture_state(self, i):
        """Move arrays the forward assigned to the layer (kept for its backward) into the pool, in a step of
        their own whose workspace is the arrays themselves (alive until copied)."""
        layer = self.net.layers[i]
        xp = backend.xp()
        arena = getattr(self.mgr.mover, "arena", None)
        kept = [(attr, val) for attr, val in vars(layer).items()
                if isinstance(val, xp.ndarray) and val.size and self._before.get(attr) != id(val)
                and not (arena is not None and _shares(xp, val, arena))]
        if not kept:
            return
        entries = []
        for attr, val in kept:
            e = self.state.get((i, attr))
            if e is None or e.size != val.size or e.dtype != val.dtype:
                e = self._state_entry(layer, i, attr, val)
            entries.append(e)
        ids = {e.id for e in entries}
        with _Step(self.mgr, ("S", self.nid, i), self._label(i, "kept buffers"), sum(v.nbytes for _, v in kept),
                   ids, {eid: "o" for eid in ids}):
            for (attr, val), e in zip(kept, entries):
                dev = self.mgr.access(e, True)
                dev[...] = val.ravel()
                setattr(layer, attr, dev.reshape(val.shape))
                e.on_resident = _restore(layer, attr, val.shape)

    def _state_entry(self, layer, i, attr, val):
        e = self.mgr.add("layer '%s' internal buffer %s" % (layer.name, attr), val.size, np.dtype(val.dtype))
        e.small = False          # found after the start-up check: managed at any size, never resident for good
        e.on_evict = _forget(layer, attr)
        self.state[(i, attr)] = e
        return e


def _modes(ids):
    """Expected uses of a pass before it has been recorded: all copied in ('w'), since a role that may be
    overwritten (an Input layer's top) is not always written by the layer."""
    return {i: "w" for i in ids}


def _shares(xp, arr, arena):
    if xp is np:
        return np.shares_memory(arr, arena)
    lo, hi = arena.data.ptr, arena.data.ptr + arena.nbytes
    return lo <= arr.data.ptr < hi


def _restore(layer, attr, shape):
    def on_resident(e):
        setattr(layer, attr, e.dev.reshape(shape))
    return on_resident


def _forget(layer, attr):
    def on_evict(e):
        setattr(layer, attr, None)
    return on_evict


class _Step(contextlib.AbstractContextManager):
    """A manager step around code outside the layer loop."""

    def __init__(self, mgr, key, label, ws, overwrites, expected):
        self.mgr, self.args = mgr, (key, label, ws, overwrites, expected)

    def __enter__(self):
        self.mgr.begin(*self.args)
        return self

    def __exit__(self, *exc):
        self.mgr.end()
        return False
