"""One timer per worker for every call's hedge and stall deadlines.

A call schedules two deadlines and, almost always, answers before either: scheduling and
cancelling must cost next to nothing, and no thread or greenlet is started per call. Entries
sit in a heap; a cancelled one is only marked, and dropped when it comes due. One daemon
thread (a greenlet under gevent, whose monkey-patching makes `threading` cooperative) sleeps
until the earliest entry, waking at most every `granularity` seconds, and runs what is due.
Callbacks run on that thread and must be quick: they end an attempt or start one.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
from collections.abc import Callable

from app.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("l104.timer")


class TimerEntry:
    """A scheduled callback; `cancel()` keeps it from running."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Keep the callback from running (it may already have run)."""
        self.cancelled = True


class Timer:
    """Runs callbacks at monotonic times, on one thread of this process."""

    def __init__(
        self, clock: Clock = SYSTEM_CLOCK, granularity: float = 0.005, threaded: bool = True
    ) -> None:
        self._clock = clock
        self._threaded = threaded  # False: nothing runs until `run_due()` is called
        self.granularity = granularity
        self._heap: list[tuple[float, int, TimerEntry]] = []
        self._order = itertools.count()
        self._wake = threading.Condition(threading.Lock())
        self._sleeping_until = float("inf")
        self._pid: int | None = None

    def schedule(self, delay: float, callback: Callable[[], object]) -> TimerEntry:
        """Run `callback` `delay` seconds from now."""
        entry = TimerEntry(self._clock.monotonic() + delay, callback)
        with self._wake:
            heapq.heappush(self._heap, (entry.when, next(self._order), entry))
            if self._threaded and self._pid != os.getpid():
                self._start()
            elif entry.when < self._sleeping_until - self.granularity:
                self._wake.notify()
        return entry

    def run_due(self) -> int:
        """Run every entry that is due now (the thread's step; tests call it directly with a
        fake clock); returns how many ran."""
        now = self._clock.monotonic()
        due: list[TimerEntry] = []
        with self._wake:
            while self._heap and self._heap[0][0] <= now:
                entry = heapq.heappop(self._heap)[2]
                if not entry.cancelled:
                    due.append(entry)
        for entry in due:
            try:
                entry.callback()
            except Exception:  # one callback's bug must not stop every call's timers
                log.exception("timer callback failed")
        return len(due)

    def pending(self) -> int:
        """Entries not yet due and not cancelled."""
        with self._wake:
            return sum(1 for _, _, entry in self._heap if not entry.cancelled)

    def _start(self) -> None:
        # Called with the lock held; a forked worker starts its own thread.
        self._pid = os.getpid()
        threading.Thread(target=self._loop, name="l104-timer", daemon=True).start()

    def _loop(self) -> None:
        while True:
            with self._wake:
                now = self._clock.monotonic()
                until = self._heap[0][0] if self._heap else now + 60.0
                self._sleeping_until = until
                if until > now:
                    self._wake.wait(max(until - now, self.granularity))
                self._sleeping_until = float("inf")
            self.run_due()
