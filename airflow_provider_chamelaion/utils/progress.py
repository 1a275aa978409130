"""Progress lines for long work: transfers (uploads, downloads) and waits.

One helper per kind, shared by every path that does that kind of work, so a 2 GB upload and a 2 GB
download read the same in the task log, and the trigger and the poll loops report a wait alike. Both
take their clock as a parameter: tests drive them with a fake clock, never with real time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: At most one progress line per this many seconds of transfer.
TRANSFER_EVERY = 10.0
#: The default interval of "still waiting" lines while a status stays the same (seconds): the operator's,
#: the sensor's and the trigger's ``still_waiting_interval``.
STILL_WAITING_EVERY = 300.0
#: The first "still waiting" line of a status comes this many seconds into it (or after the interval, if
#: shorter): a wait says it is alive within its first minute, not only after the interval.
STILL_WAITING_FIRST = 30.0

Clock = Callable[[], float]


def format_size(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _rate(done: int, elapsed: float) -> str:
    return f"{format_size(done / elapsed)}/s" if elapsed > 0 else "n/a"


class TransferProgress:
    """Logs a transfer's progress at most every ``every`` seconds, and one summary line at the end.

    Each progress line has the bytes done, the total when known, the rate and the estimated time left;
    the summary has the size, the time taken and the rate. A transfer shorter than ``every`` seconds
    logs only the summary.

    :param verb: "Uploading" / "Downloading"; the summary uses its past tense ("Uploaded").
    :param what: what is transferred, e.g. ``"output of 6f82a2d8 to /data/ep42.mp4"``.
    :param total: expected size in bytes, when known.
    """

    def __init__(
        self,
        verb: str,
        what: str,
        total: int | None,
        log: Any,
        *,
        every: float = TRANSFER_EVERY,
        clock: Clock | None = None,
    ) -> None:
        self.verb = verb
        self.what = what
        self.total = total
        self.done = 0
        self._log = log
        self._every = every
        self._clock = clock or time.monotonic
        self._start = self._clock()
        self._last_line = self._start

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        now = self._clock()
        if now - self._last_line < self._every:
            return
        self._last_line = now
        elapsed = now - self._start
        if self.total:
            left = (
                format_duration((self.total - self.done) * elapsed / self.done)
                if self.done and elapsed > 0
                else "unknown"
            )
            self._log.info(
                "%s %s: %s of %s (%d%%), %s, about %s left",
                self.verb,
                self.what,
                format_size(self.done),
                format_size(self.total),
                100 * self.done // self.total,
                _rate(self.done, elapsed),
                left,
            )
        else:
            self._log.info(
                "%s %s: %s so far, %s",
                self.verb,
                self.what,
                format_size(self.done),
                _rate(self.done, elapsed),
            )

    def finish(self) -> None:
        elapsed = self._clock() - self._start
        past = self.verb[:-3] + "ed" if self.verb.endswith("ing") else self.verb
        self._log.info(
            "%s %s: %s in %s (%s)",
            past,
            self.what,
            format_size(self.done),
            format_duration(elapsed),
            _rate(self.done, elapsed),
        )


class WaitReporter:
    """Logs a wait's status changes and, while the status stays the same, "still waiting" lines: the
    first one ``STILL_WAITING_FIRST`` seconds into the status (or ``every``, if shorter), then one per
    ``every`` seconds, each with the status, how long it has lasted and how long the wait has lasted.

    Lines are written when :meth:`report` is called (each poll), so they come at the first poll at or
    after the time due.

    Used by the trigger and by the poll loops (sensor ``poke`` mode, the operator's non-deferrable wait).

    :param every: seconds between "still waiting" lines of one status (the tasks' ``still_waiting_interval``).
    :param clock: a monotonic clock; tests pass a fake one.
    """

    def __init__(
        self, request_id: str, log: Any, *, every: float = STILL_WAITING_EVERY, clock: Clock | None = None
    ) -> None:
        self.request_id = request_id
        self._log = log
        self._every = every
        self._first = min(STILL_WAITING_FIRST, every)
        self._clock = clock or time.monotonic
        self._start = self._clock()
        self._status: str | None = None
        self._since = self._start
        self._next_line = self._start

    def report(self, status: str) -> None:
        now = self._clock()
        if status != self._status:
            self._log.info("Chamelaion lip-sync request %s is %s", self.request_id, status)
            self._status, self._since, self._next_line = status, now, now + self._first
        elif now >= self._next_line:
            self._log.info(
                "Still waiting on Chamelaion lip-sync request %s: %s for %s (waiting %s in all)",
                self.request_id,
                status,
                format_duration(now - self._since),
                format_duration(now - self._start),
            )
            self._next_line = now + self._every


class QuietLog:
    """A log whose INFO and WARNING lines go out at DEBUG; errors as they are.

    For the lines about one item of a batch (submitted, uploaded, downloaded, a lost answer looked up): a
    batch of 10,000 would otherwise write 20,000 such lines to its task log; it logs its progress ("Submitted
    3000 of 10000") and counts instead.
    """

    def __init__(self, log: Any) -> None:
        self._log = log

    def info(self, *args: Any, **kwargs: Any) -> None:
        self._log.debug(*args, **kwargs)

    def warning(self, *args: Any, **kwargs: Any) -> None:
        self._log.debug(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)
