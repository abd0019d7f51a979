"""Admission control: refuse a question at once (503, Retry-After) when the model worker
cannot finish it within its time limit, rather than queue it to time out at 120 s.

The estimate comes from measured throughput, not from the worker's internals (which
may batch in any way): each finished generation adds the seconds the worker spent on it
alone, the time since the previous finish or since it started, whichever is later (so
an idle gap counts for nothing, and a batch of 16 finishing together counts its time
once); the mean over the last `window` finishes is the service time per request. A new
question would finish after the ones already admitted: (in flight + 1) x that.
"""
from __future__ import annotations

import math
import threading
from collections import deque


class Admission:
    def __init__(self, *, window: int = 32, min_samples: int = 3):
        self.min_samples = min_samples
        self._intervals: deque[float] = deque(maxlen=window)
        self._last_finish: float | None = None
        self.in_flight = 0
        self.refused = 0
        self._lock = threading.Lock()

    @property
    def per_request_s(self) -> float | None:
        """Seconds of the worker per finished request, once measured."""
        with self._lock:
            if len(self._intervals) < self.min_samples:
                return None
            return sum(self._intervals) / len(self._intervals)

    def expected_s(self) -> float | None:
        """When a question admitted now would be done, by the measured throughput."""
        per = self.per_request_s
        return None if per is None else (self.in_flight + 1) * per

    def admit(self, remaining_s: float) -> float | None:
        """None (admitted: counted in flight until `done`) when a new question can finish
        within `remaining_s`, else the seconds after which to try again."""
        expected = self.expected_s()
        with self._lock:
            if expected is not None and self.in_flight and expected > remaining_s:
                self.refused += 1
                return max(1.0, min(60.0, math.ceil(expected - remaining_s)))
            self.in_flight += 1
            return None

    def done(self, started: float | None, finished: float | None, measured: bool) -> None:
        """An admitted question left the worker; `measured`: it was generated to its end
        (a cancelled or failed one says nothing about the throughput)."""
        with self._lock:
            self.in_flight = max(0, self.in_flight - 1)
            if started is None or finished is None:
                return
            since = started if self._last_finish is None else max(started, self._last_finish)
            self._last_finish = max(finished, self._last_finish or finished)
            if measured:
                self._intervals.append(max(0.0, finished - since))
