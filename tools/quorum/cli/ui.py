"""Rendering library events for people (live display, plain lines) or
machines (JSON lines).  The library never prints; this is where it shows."""
from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from tabulate import tabulate
from ..text import printable


def short(digest: str | None, n: int = 12) -> str:
    if not digest:
        return "-"
    algo, _, hexd = digest.partition(":")
    return f"{algo}:{hexd[:n]}" if hexd else digest[:n]


class JsonEvents:
    """One JSON object per line on stdout; build log lines are left out
    (they are in out/logs/) unless ``logs`` is set."""

    def __init__(self, out: TextIO = sys.stdout, logs: bool = False):
        self.out, self.logs = out, logs

    def __call__(self, ev: dict) -> None:
        if ev.get("event") == "log" and not self.logs:
            return
        self.out.write(json.dumps(ev, sort_keys=True) + "\n")
        self.out.flush()

    def close(self) -> None:
        pass


class PlainEvents:
    """One line per event, for logs and CI (no terminal)."""

    def __init__(self, out: TextIO = sys.stderr, verbose: bool = False):
        self.out, self.verbose = out, verbose
        self.t0 = time.monotonic()
        self.cached = 0

    def _p(self, s: str) -> None:
        self.out.write(f"[{time.monotonic() - self.t0:7.1f}s] {s}\n")
        self.out.flush()

    def __call__(self, ev: dict) -> None:
        e = ev.get("event")
        n = ev.get("name", "")
        if e == "plan":
            self._p(f"plan: {len(ev['order'])} nodes, {ev['jobs']} at a time")
        elif e == "start":
            self._p(f"build   {n}" + (f"  on {printable(str(ev['engine']))}" if ev.get("engine") else ""))
        elif e == "load":
            self._p(f"load    {n} into {printable(str(ev.get('engine')))}")
        elif e == "requeue":
            self._p(f"requeue {n}: its engine {printable(str(ev.get('engine')))} stopped answering; "
                    "building it elsewhere")
        elif e == "engine":
            what = printable(str(ev.get("health")))
            if ev.get("retry_in") is not None:
                what += f", probed again in {ev['retry_in']:.0f}s ({printable(str(ev.get('error')))})"
            self._p(f"engine  {printable(str(ev.get('engine')))}: {what}")
        elif e == "cached":
            # One line per cached node would bury the few that matter on a
            # large tree; they are counted in the summary instead.
            self.cached += 1
            if self.verbose:
                self._p(f"cached  {n}  {short(ev.get('digest'))}")
        elif e == "finish" and self.cached:
            self._p(f"{self.cached} up to date (cached)")
        elif e == "built":
            self._p(f"built   {n}  {short(ev.get('digest'))}  {ev.get('seconds', 0):.1f}s")
        elif e == "failed":
            self._p(f"FAILED  {n}: {printable(str(ev.get('error')))}")
        elif e == "skipped":
            self._p(f"skipped {n} (because {ev.get('because')} failed)" if ev.get("because") != "stop"
                    else f"skipped {n} (stopped after a failure)")
        elif e == "fetch":
            self._p(f"fetch   {ev.get('file')} from {printable(str(ev.get('origin')))}")
        elif e == "cache-corrupt":
            self._p(f"CORRUPT cache entry {ev.get('sha256')} ({ev.get('detail')}); fetching it again")
        elif e == "gate":
            self._p(f"gate    {n}: {ev.get('result')} ({', '.join(ev.get('members', []))})")
        elif e == "archive":
            self._p(f"archive {ev.get('path')}")
        elif e == "shim":
            self._p(f"shim    compiling the rebuild's preload shim in seed {ev.get('seed')}")
        elif e == "log" and self.verbose:
            # Build output is the package's: escaped, never raw to a terminal.
            self.out.write(f"  {n}| {printable(str(ev.get('line')))}\n")

    def close(self) -> None:
        pass


class LiveEvents:
    """A live display on a terminal: counts of queued, done, cached,
    failed, then one lane per engine (its health and slots, what it runs
    with elapsed time and last log line)."""

    def __init__(self):
        from rich.console import Console
        from rich.live import Live
        self.console = Console(stderr=True)
        self.running: dict[str, float] = {}
        self.on: dict[str, str] = {}                 # running node -> engine
        self.engines: dict[str, int] = {}            # engine -> slots, in pool order
        self.health: dict[str, str] = {}
        self.last: dict[str, str] = {}
        self.counts = {"built": 0, "cached": 0, "failed": 0, "skipped": 0}
        self.total = 0
        self.t0 = time.monotonic()
        self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True)
        self.live.start()

    def _render(self):
        from rich.table import Table
        t = Table.grid(padding=(0, 2))
        done = sum(self.counts.values())
        queued = self.total - done - len(self.running)
        t.add_row(f"[bold]{done}/{self.total}[/] done", f"built {self.counts['built']}",
                  f"cached {self.counts['cached']}", f"running {len(self.running)}", f"queued {max(queued, 0)}",
                  f"[red]failed {self.counts['failed']}[/]" if self.counts["failed"] else "",
                  f"{time.monotonic() - self.t0:.0f}s")
        from rich.text import Text
        lanes = list(self.engines) + sorted({e for e in self.on.values() if e not in self.engines})
        for eng in lanes:
            mine = sorted(n for n in self.running if self.on.get(n) == eng)
            health = self.health.get(eng, "healthy")
            style = "green" if health == "healthy" else "red"
            # Text, not markup: engine names and log lines are not ours to style.
            t.add_row(Text.assemble(Text(eng, style="bold"), " ", Text(health, style=style)),
                      f"{len(mine)}/{self.engines.get(eng, '?')} busy", "")
            for n in mine:
                t.add_row(Text(f"  {n}", style="cyan"), f"{time.monotonic() - self.running[n]:.0f}s",
                          Text(self.last.get(n, "")[:70]))
        return t

    def __call__(self, ev: dict) -> None:
        e, n = ev.get("event"), ev.get("name")
        if e == "plan":
            self.total = len(ev["order"])
            self.engines = {printable(str(x.get("name"))): x.get("slots", 1) for x in ev.get("engines") or []}
        elif e == "start":
            self.running[n] = time.monotonic()
            self.on[n] = printable(str(ev.get("engine") or "?"))
        elif e == "requeue":
            self.running.pop(n, None)
        elif e == "engine":
            self.health[printable(str(ev.get("engine")))] = str(ev.get("health"))
        elif e == "log":
            self.last[n] = printable(str(ev.get("line", "")))
        elif e in self.counts:
            self.running.pop(n, None)
            self.counts[e] += 1
            if e in ("built", "failed"):
                from rich.text import Text
                mark = Text("built", style="green") if e == "built" else Text("FAILED", style="red")
                what = short(ev.get("digest")) if e == "built" else printable(str(ev.get("error")))
                self.console.print(Text.assemble(mark, f" {n} {what}"))
        self.live.update(self._render())

    def close(self) -> None:
        self.live.stop()


def event_sink(args, verbose: bool = False):
    if getattr(args, "json", False):
        return JsonEvents(logs=verbose)
    if sys.stderr.isatty() and not verbose:
        try:
            return LiveEvents()
        except Exception:
            pass
    return PlainEvents(verbose=verbose)


def table(rows: list[list], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
