"""The DAG's bookkeeping while a build runs: which nodes are ready, in what
order they are taken, what a finished node releases, what a failed one
skips, and when a gate is checked.

No engine, no threads, no files: the builder asks ``take()`` for the next
ready node, tells ``finished``/``failed`` what happened, and renders the
returned skips as events.  The benchmark drives the very same object on
simulated time.

Order: the ready node with the longest chain of work still behind it goes
first (critical path first; ``weight`` says how long a node takes, 1 each
by default), ties by build order.  Starting the long chains early is what
keeps a wide pool busy to the end.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

import networkx as nx

from . import graph as graphmod

# Node states.
WAITING, READY, RUNNING, DONE, FAILED, SKIPPED = "waiting", "ready", "running", "done", "failed", "skipped"


class Schedule:
    def __init__(self, g: nx.DiGraph, order: list[str], *, gates: Iterable[tuple[str, Iterable[str]]] = (),
                 check_gate: Callable[[str, list[str]], bool] = lambda name, members: True,
                 weight: Callable[[str], float] = lambda n: 1.0):
        self.g = g
        self.order = order
        self.need = set(order)
        self.index = {n: i for i, n in enumerate(order)}
        self.check_gate = check_gate
        # Gates with at least two members in this build; one member alone
        # has nothing to agree with.
        self.gate_of: dict[str, tuple[str, list[str]]] = {}
        for gname, members in gates:
            present = [m for m in members if m in self.need]
            if len(present) >= 2:
                for m in present:
                    self.gate_of[m] = (gname, present)
        # Longest remaining chain of work from each node (itself included).
        self.rank: dict[str, float] = {}
        for n in reversed(order):
            after = [self.rank[d] for d in g.successors(n) if d in self.need]
            self.rank[n] = weight(n) + (max(after) if after else 0.0)
        self.waiting = {n: sum(1 for p in g.predecessors(n) if p in self.need) for n in order}
        self.state = {n: WAITING for n in order}
        self._ready: list[tuple[float, int, str]] = []
        for n in order:
            if self.waiting[n] == 0:
                self._push(n)

    def _push(self, n: str) -> None:
        self.state[n] = READY
        heapq.heappush(self._ready, (-self.rank[n], self.index[n], n))

    # --- taking work ----------------------------------------------------------
    def take(self) -> str | None:
        """The next ready node (now marked running), or None."""
        while self._ready:
            _, _, n = heapq.heappop(self._ready)
            if self.state[n] == READY:
                self.state[n] = RUNNING
                return n
        return None

    def put_back(self, n: str) -> None:
        """``n`` was taken but could not start (no free slot), or must run
        again (requeued after an engine failure): ready again, in its place."""
        self._push(n)

    def has_ready(self) -> bool:
        return any(self.state[n] == READY for _, _, n in self._ready)

    def unfinished(self) -> list[str]:
        return [n for n in self.order if self.state[n] in (WAITING, READY, RUNNING)]

    # --- outcomes -------------------------------------------------------------
    def finished(self, n: str) -> list[tuple[str, str]]:
        """``n`` is done (built or cached): release its dependents.  Returns
        the nodes skipped because a gate it completed failed."""
        self.state[n] = DONE
        gate = self.gate_of.get(n)
        if gate is not None:
            # A gate member releases nothing on its own: its dependents wait
            # until every member is done and the artifacts agree.
            gname, members = gate
            if not all(self.state[m] == DONE for m in members):
                return []
            if not self.check_gate(gname, members):
                skipped: list[tuple[str, str]] = []
                for m in members:
                    skipped += self._skip_dependents(m, f"gate {gname}")
                return skipped
            for m in members:
                if m != n:
                    self._release(m)
        self._release(n)
        return []

    def failed(self, n: str, because: str | None = None) -> list[tuple[str, str]]:
        """``n`` failed: everything that needs it is skipped.  Returns
        (node, because) for each node skipped now."""
        self.state[n] = FAILED
        return self._skip_dependents(n, because or n)

    def stop(self) -> list[str]:
        """Nothing more starts: the nodes never started, now skipped."""
        left = [n for n in self.order if self.state[n] in (WAITING, READY)]
        for n in left:
            self.state[n] = SKIPPED
        return left

    def _release(self, n: str) -> None:
        for d in sorted((d for d in self.g.successors(n) if d in self.need), key=self.index.__getitem__):
            if self.state[d] == WAITING:
                self.waiting[d] -= 1
                if self.waiting[d] == 0:
                    self._push(d)

    def _skip_dependents(self, n: str, because: str) -> list[tuple[str, str]]:
        out = []
        for d in sorted(graphmod.dependents(self.g, [n]) & self.need, key=self.index.__getitem__):
            if self.state[d] in (WAITING, READY):
                self.state[d] = SKIPPED
                out.append((d, because))
        return out
