"""Progress of a long ingest: a tqdm bar on a terminal, plain log lines elsewhere.

A Slurm job's .err file or a pipe is no terminal, and a bar drawn there is either
suppressed or a heap of carriage returns; so off a terminal a line such as
`embedding: 640/1600 passages (40%), 52s` is written every `step` of the work or
every `interval` seconds, whichever comes first, and a last one when it is done.

Messages written while a bar is on the screen (`write`) go above the bar, never into
its middle.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):       # a closed or file-less stream
        return False


def write(message: str, stream=None) -> None:
    """Print a line to `stream` (stderr) above any progress bar being drawn there."""
    from tqdm.auto import tqdm

    stream = stream if stream is not None else sys.stderr
    tqdm.write(message, file=stream)


class Progress:
    """`total` units of work named `desc`; `update(n)` as they are done. Disabled:
    nothing at all. On a terminal: a tqdm bar. Elsewhere: log lines."""

    def __init__(self, total: int, desc: str, unit: str, *, enabled: bool = True,
                 stream=None, interval: float = 10.0, step: float = 0.1,
                 clock=time.monotonic):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and total > 0
        self.interval, self.step, self.clock = interval, step, clock
        self.done = 0
        self._bar = None
        self._started = self._last = clock()
        self._next = step              # the next fraction that earns a line
        if self.enabled and _isatty(self.stream):
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream)

    @property
    def plain(self) -> bool:
        """Writing log lines (enabled, not on a terminal)."""
        return self.enabled and self._bar is None

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.plain and self.done < self.total:
            now = self.clock()
            if self.done >= self._next * self.total or now - self._last >= self.interval:
                self._line(now)
                while self._next * self.total <= self.done:
                    self._next += self.step

    def close(self, finished: bool = True) -> None:
        """Stop; off a terminal, a last line when the work was `finished`."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.plain and finished:
            now = self.clock()
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}s done in "
                  f"{now - self._started:.0f}s", file=self.stream, flush=True)
        self.enabled = False

    def _line(self, now: float) -> None:
        self._last = now
        print(f"{self.desc}: {self.done}/{self.total} {self.unit}s "
              f"({self.done / self.total:.0%}), {now - self._started:.0f}s",
              file=self.stream, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(finished=exc_type is None)


def track(items: Iterable, total: int, desc: str, unit: str, **kw) -> Iterator:
    """Iterate `items` with a `Progress` over them."""
    with Progress(total, desc, unit, **kw) as bar:
        for item in items:
            yield item
            bar.update(1)
