"""Progress for long work, one helper for every command.

In a terminal: rich bars, one per phase (``trainings``, ``probe steps``, ...), each counting its
own work with rate and ETA. When stderr is not a terminal (a log file, CI, a pipe): one plain
line at least every ``every`` seconds -- ``[phase] done/total (pct) rate/s ETA ...`` -- so a
redirected run is never silent. Every line also goes to the run folder's ``progress.log`` when a
log path is given.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import TextIO


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "ETA --"
    s = int(round(seconds))
    return f"ETA {s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _plain(text: str) -> str:
    """Rich markup removed (``[bold]x[/bold]`` -> ``x``) for log lines."""
    try:
        from rich.text import Text

        return Text.from_markup(text).plain
    except Exception:  # noqa: BLE001 -- text with brackets that are not markup
        return text


class PhaseTask:
    """The work of one phase: ``advance(n)`` after n units of work, ``finish()`` at the end."""

    def __init__(self, reporter: "ProgressReporter", name: str, total: int, done: int = 0, unit: str = "runs"):
        self.reporter = reporter
        self.name = name
        self.total = int(total)
        self.done = int(done)
        self.start_done = int(done)
        self.unit = unit
        self.t0 = time.monotonic()
        self.finished = False
        self._rich_id = None

    @property
    def rate(self) -> float:
        dt = time.monotonic() - self.t0
        return (self.done - self.start_done) / dt if dt > 0 else 0.0

    @property
    def eta(self) -> float | None:
        r = self.rate
        if r <= 0 or not self.total:
            return None
        return max(self.total - self.done, 0) / r

    def line(self) -> str:
        pct = f" ({100.0 * self.done / self.total:.0f}%)" if self.total else ""
        tot = f"/{self.total}" if self.total else ""
        return f"[{self.name}] {self.done}{tot} {self.unit}{pct}, {self.rate:.2f} {self.unit}/s, {_fmt_eta(self.eta)}"

    def advance(self, n: int = 1) -> None:
        self.done += int(n)
        self.reporter._advanced(self)

    def set_total(self, total: int) -> None:
        self.total = int(total)
        self.reporter._advanced(self)

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.reporter._finished(self)


class ProgressReporter:
    """Bars in a terminal, periodic log lines elsewhere (see the module doc).

    **Arguments:**

    - `stream`: where progress goes (default stderr).
    - `every`: seconds between log lines when ``stream`` is not a terminal.
    - `log_path`: a file that gets every log line too (e.g. ``RUN/progress.log``).
    - `terminal`: force bars (True) or log lines (False); default: ``stream.isatty()``.
    """

    def __init__(self, stream: TextIO | None = None, every: float = 10.0, log_path: str | Path | None = None,
                 terminal: bool | None = None):
        self.stream = stream or sys.stderr
        self.every = float(every)
        self.log_path = Path(log_path) if log_path else None
        self.terminal = bool(self.stream.isatty()) if terminal is None else bool(terminal)
        self.tasks: list[PhaseTask] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last = 0.0
        self._rich = None
        self._thread = None
        if self.terminal:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._rich = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                  TimeRemainingColumn(), console=Console(file=self.stream), transient=False)
            self._rich.start()
        else:
            self._thread = threading.Thread(target=self._tick, name="phaseprobe-progress", daemon=True)
            self._thread.start()

    # -- public --
    def phase(self, name: str, total: int, done: int = 0, unit: str = "runs") -> PhaseTask:
        """Start counting the work of a phase."""
        task = PhaseTask(self, name, total, done, unit)
        with self._lock:
            self.tasks.append(task)
        if self._rich is not None:
            task._rich_id = self._rich.add_task(name, total=total or None, completed=done, rate="")
        self._log(task.line() + (" (resumed)" if done else ""), force=True)
        return task

    def message(self, text: str) -> None:
        """A line of its own (printed above the bars in a terminal)."""
        if self._rich is not None:
            self._rich.console.print(text)
            self._write_log(_plain(text))
        else:
            self._log(_plain(text), force=True)

    def close(self) -> None:
        self._stop.set()
        if self._rich is not None:
            self._rich.stop()
        for t in self.tasks:
            if not t.finished:
                self._log(t.line(), force=True)

    def __enter__(self) -> "ProgressReporter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals --
    def _advanced(self, task: PhaseTask) -> None:
        if self._rich is not None and task._rich_id is not None:
            self._rich.update(task._rich_id, completed=task.done, total=task.total or None, rate=f"{task.rate:.2f}/s")
        if time.monotonic() - self._last >= self.every:
            self._log(task.line())

    def _finished(self, task: PhaseTask) -> None:
        if self._rich is not None and task._rich_id is not None:
            self._rich.update(task._rich_id, completed=task.done, rate=f"{task.rate:.2f}/s")
        self._log(task.line() + " done", force=True)
        self.record_phase_time(task)

    def record_phase_time(self, task: PhaseTask) -> None:
        """Append a finished phase's wall time to ``phase_times.json`` next to the log (the report
        shows it): ``{"phase", "unit", "done", "wall_s", "ended"}``; a resumed phase gets a second entry."""
        if self.log_path is None:
            return
        import json

        p = self.log_path.parent / "phase_times.json"
        try:
            entries = json.loads(p.read_text()) if p.exists() else []
        except (OSError, ValueError):
            entries = []
        entries.append({"phase": task.name, "unit": task.unit, "done": task.done - task.start_done,
                        "wall_s": round(time.monotonic() - task.t0, 3),
                        "ended": time.strftime("%Y-%m-%d %H:%M:%S")})
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".tmp-{p.name}")
            tmp.write_text(json.dumps(entries, indent=1))
            tmp.replace(p)
        except OSError:
            pass

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self.every)):
            if time.monotonic() - self._last >= self.every:
                with self._lock:
                    live = [t for t in self.tasks if not t.finished]
                for t in live:
                    self._log(t.line(), force=True)
                if not live:
                    self._last = time.monotonic()

    def _write_log(self, text: str) -> None:
        if self.log_path is not None:
            try:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.log_path, "a") as f:
                    f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
            except OSError:
                pass

    def _log(self, text: str, force: bool = False) -> None:
        self._last = time.monotonic()
        self._write_log(text)
        if self._rich is None:
            try:
                self.stream.write(text + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
