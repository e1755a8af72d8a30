"""What a command shows while it works: one progress display per stage, on stderr.

The library only calls callbacks (the ingest driver's ``progress(done, total, record)``, training's
``TrainHooks.progress(step, total, losses)``, evaluation's and indexing's ``progress(stage, done, total)``); the flows
hand them a :class:`StageProgress`, which draws them:

* on a terminal, one line per stage redrawn in place (``\\r``, at most every ``redraw_s``) and left standing when the
  stage ends, so the screen ends with a line per stage: its counts, rate and time;
* elsewhere (a log file, CI, a test capturing stderr), plain lines, few of them: one only after at least ``every_s``
  seconds *and* ``every_fraction`` of the stage since the stage began or the last line, and the last. A stage of
  any length prints at most ``1 / every_fraction`` lines (4), and one shorter than ``every_s`` its last only: a
  whole `make demo` fits a screen.

A rate needs a second of work to mean something: until then (and for a stage that has not begun) none is shown.

Each line reads ``extract synthetic-train: 12/48 videos (12 ok, 0 failed), 0.81 videos/s, ETA 44 s`` or
``train 3f2a: step 120/400, loss 0.1234, 52.3 samples/s, ETA 1 min 33 s``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

EVERY_S = 30.0  # off a terminal: at least this long between two lines of a stage
EVERY_FRACTION = 0.25  # ... and at least this share of the stage
MIN_RATE_SPAN_S = 1.0  # a rate over less time than this (the first video back a moment after the start) is noise
REDRAW_S = 0.2  # on a terminal: the most often a line is redrawn


def duration(seconds: float) -> str:
    """``7 s``, ``1 min 33 s``, ``2 h 05 min``: a rounded length for ETAs and totals."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _number(x: float) -> str:
    """Three significant digits without exponents: ``0.812``, ``52.3``, ``1234``."""
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


class StageProgress:
    """One stage's progress line: ``update(done)`` as work completes, ``close()`` at its end (idempotent).

    ``counter`` formats the count (``{done}``, ``{total}``, ``{unit}``); the rate is ``rate_scale`` ``rate_unit``
    per counted unit (a training step is ``clips_per_step`` samples) and is measured from construction, or from
    the first update when ``rate_from_first`` (training: the first logged step follows the network's build and,
    after a resume, starts past 0). Safe to call from the threads of a task runner.
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        unit: str = "",
        counter: str = "{done}/{total} {unit}",
        rate_unit: str | None = None,
        rate_scale: float = 1.0,
        rate_from_first: bool = False,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] | None = None,
        every_s: float = EVERY_S,
        every_fraction: float = EVERY_FRACTION,
        redraw_s: float = REDRAW_S,
    ) -> None:
        self.label, self.total, self.unit, self.counter = label, int(total), unit, counter
        self.rate_unit = rate_unit if rate_unit is not None else unit
        self.rate_scale, self.rate_from_first = rate_scale, rate_from_first
        self._stream, self._tty = stream, tty
        self.clock = clock or time.monotonic
        self.every_s, self.every_fraction, self.redraw_s = every_s, every_fraction, redraw_s
        self.started = self.clock()
        self.base: tuple[int, float] | None = None if rate_from_first else (0, self.started)
        self.done, self.details, self.updates = 0, "", 0
        self.lines: list[str] = []  # every line written, for the caller's summary and for tests
        self._printed: tuple[int, float] | None = None  # (done, time) of the last line printed
        self._drawn = 0.0
        self._open_line = False  # a terminal line drawn and not yet ended by a newline
        self._closed = False
        self._lock = threading.Lock()

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr  # the stderr of now (tests swap it)

    @property
    def tty(self) -> bool:
        if self._tty is not None:
            return self._tty
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def update(self, done: int, total: int | None = None, details: str = "") -> None:
        """``done`` of ``total`` (default: the constructor's) units finished; ``details`` follows the count."""
        with self._lock:
            if self._closed:
                return
            now = self.clock()
            self.done, self.details = int(done), details
            self.updates += 1
            if total is not None:
                self.total = int(total)
            if self.base is None:
                self.base = (self.done, now)
            if self.tty:
                if now - self._drawn >= self.redraw_s or self.done >= self.total:
                    self._draw(now)
            elif self._due(now):
                self._print(now)

    def close(self, note: str = "") -> None:
        """End the stage: its last state as a line (with ``note``), unless that line is already out. A stage that
        never had an update (nothing to do) prints nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.updates == 0 and not note:
                return
            now = self.clock()
            if self.tty:
                if self._open_line or note:
                    self._draw(now, note)
                    self.stream.write("\n")
                    self.stream.flush()
                    self._open_line = False
            elif note or self._printed is None or self._printed[0] != self.done:
                self._print(now, note)

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the line

    def line(self, now: float, note: str = "") -> str:
        """The stage's line at ``now``: label, count, details, rate and ETA (or the time taken, when done)."""
        count = self.counter.format(done=self.done, total=self.total, unit=self.unit).strip()
        parts = [f"{self.label}: {count}" + (f" {self.details}" if self.details.startswith("(") else "")]
        if self.details and not self.details.startswith("("):
            parts.append(self.details)
        rate = self.rate(now)
        if rate is not None:
            parts.append(f"{_number(rate * self.rate_scale)} {self.rate_unit}/s".replace(" /s", "/s"))
        if self.done >= self.total:
            parts.append(f"took {duration(now - self.started)}")
        elif rate:
            parts.append(f"ETA {duration((self.total - self.done) / rate)}")
        if note:
            parts.append(note)
        return ", ".join(parts)

    def rate(self, now: float) -> float | None:
        """Units per second since the base point (None until there is a span to measure)."""
        if self.base is None:
            return None
        done0, t0 = self.base
        if self.done <= done0 or now <= t0 or (now - t0 < MIN_RATE_SPAN_S and self.done < self.total):
            return None
        return (self.done - done0) / (now - t0)

    def _due(self, now: float) -> bool:
        if self.done >= self.total:
            return self._printed is None or self._printed[0] != self.done
        done0, t0 = self._printed if self._printed is not None else (0, self.started)
        step = max(1, round(self.every_fraction * self.total))
        return now - t0 >= self.every_s and self.done - done0 >= step

    def _print(self, now: float, note: str = "") -> None:
        text = self.line(now, note)
        self.lines.append(text)
        self.stream.write(text + "\n")
        self.stream.flush()
        self._printed = (self.done, now)

    def _draw(self, now: float, note: str = "") -> None:
        text = self.line(now, note)
        if not self.lines or self.lines[-1] != text:
            self.lines.append(text)
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()
        self._drawn, self._open_line = now, True


def extraction(kind: str, dataset: str) -> Callable[[int, int, Any], None]:
    """The ingest driver's ``progress(done, total, record)`` drawn as ``extract DATASET: 3/8 videos (3 ok, 0
    failed)``; call ``.close()`` on the returned object when the run ends."""
    return _IngestProgress(kind, dataset)


class _IngestProgress:
    def __init__(self, kind: str, dataset: str) -> None:
        self.kind, self.dataset = kind, dataset
        # made now, not at the first video back: the rate counts from the run's start, not from that video
        self.display = StageProgress(f"{kind} {dataset}", 0, unit="videos")
        self.ok = self.failed = 0

    def __call__(self, done: int, total: int, record: Any) -> None:
        if getattr(record, "status", "ok") == "failed":
            self.failed += 1
        else:
            self.ok += 1
        self.display.update(done, total, f"({self.ok} ok, {self.failed} failed)")

    def close(self) -> None:
        self.display.close()


def training(run: str, clips_per_step: int) -> _TrainProgress:
    """Training's ``TrainHooks.progress(step, total, losses)`` drawn as ``train RUN: step 120/400, loss 0.1234,
    52.3 samples/s, ETA 1 min 33 s``."""
    return _TrainProgress(run, clips_per_step)


class _TrainProgress:
    def __init__(self, run: str, clips_per_step: int) -> None:
        self.display: StageProgress | None = None
        self.run, self.clips_per_step = run, clips_per_step

    def __call__(self, step: int, total: int, losses: dict[str, float]) -> None:
        if self.display is None:
            self.display = StageProgress(
                f"train {self.run}" if self.run else "train",
                total,
                counter="step {done}/{total}",
                rate_unit="samples",
                rate_scale=self.clips_per_step,
                rate_from_first=True,
            )
        loss = losses.get("loss")
        self.display.update(step, total, f"loss {loss:.4f}" if loss is not None else "")

    def close(self) -> None:
        if self.display is not None:
            self.display.close()


class Stages:
    """``progress(stage, done, total)`` of evaluation and indexing: a :class:`StageProgress` per stage name,
    labelled ``PREFIX: STAGE``; each earlier stage closes when the next one starts."""

    def __init__(self, prefix: str, unit: str = "videos") -> None:
        self.prefix, self.unit = prefix, unit
        self.displays: dict[str, StageProgress] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        display = self.displays.get(stage)
        if display is None:
            for other in self.displays.values():
                other.close()
            display = self.displays[stage] = StageProgress(f"{self.prefix}: {stage}", total, unit=self.unit)
        display.update(done, total)

    def close(self) -> None:
        for display in self.displays.values():
            display.close()
