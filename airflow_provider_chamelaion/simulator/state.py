"""The simulator's memory: jobs and their lifecycle, scripted and random faults, and a call log.

Everything here is plain Python guarded by one lock, so tests can inspect and steer a simulator that
serves requests on another thread.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

#: Fault kinds. ``status``: answer with ``status`` (and ``retry_after``/``body``); ``drop``: close the
#: connection without answering and without acting; ``drop_after``: act (e.g. create the job), then
#: close without answering; ``slow``: wait ``delay`` seconds, then answer normally; ``malformed``:
#: answer 200 with a body that is not JSON; ``truncate``: (outputs) send the headers and ``cut_at``
#: bytes of the body, then close; ``empty_page``: (listings) answer the page with no requests but the real
#: ``total``, as a listing shifting under concurrent writes can.
FAULT_KINDS = ("status", "drop", "drop_after", "slow", "malformed", "truncate", "empty_page")


@dataclass
class Fault:
    """One scripted fault, applied to the next ``times`` calls that match ``method`` and ``path``.

    :param path: a regular expression searched in the request path (``/api/...`` or ``/outputs/...``);
        ``None`` matches every path.
    """

    kind: str = "status"
    status: int = 503
    retry_after: str | None = None
    body: str | None = None
    content_type: str = "application/json"
    delay: float = 0.0
    cut_at: int = 0
    method: str | None = None
    path: str | None = None
    times: int = 1
    #: Matching calls to let through before the fault applies (e.g. 1: the second listing page).
    after: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return self.path is None or re.search(self.path, path) is not None


#: What a random fault can be. POSTs only ever get a 429 (refused without acting), so random faults
#: never make a well-behaved client pay twice; GETs get the whole transient range.
RANDOM_GET_FAULTS: tuple[Fault, ...] = (
    Fault("status", status=503),
    Fault(
        "status",
        status=502,
        body="<html><body><h1>502 Bad Gateway</h1></body></html>",
        content_type="text/html",
    ),
    Fault("status", status=429, retry_after="0"),
    Fault("drop"),
    Fault("slow", delay=0.2),
)
RANDOM_POST_FAULTS: tuple[Fault, ...] = (Fault("status", status=429, retry_after="0"),)
#: A POST the server acts on and then never answers (``lost_answer_rate``).
LOST_ANSWER = Fault("drop_after")


_OFFSET = re.compile(r"^\s*([+-]?)(\d+(?:\.\d+)?)\s*([smhdwy]?)\s*$")
_OFFSET_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_clock_offset(text: str) -> float:
    """``-8h``, ``+30d``, ``-1y``, ``90s``, ``0``: seconds to shift the API's clock by.

    Units: s, m, h, d, w, y (365 days); none means seconds.
    """
    match = _OFFSET.match(text)
    if match is None:
        raise ValueError(f"clock offset {text!r} is not like -8h, +30d or -1y (units s, m, h, d, w, y)")
    sign, amount, unit = match.groups()
    seconds = float(amount) * _OFFSET_UNITS[unit]
    return -seconds if sign == "-" else seconds


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Job:
    id: str
    created_wall: datetime
    created_clock: float
    reference_id: str | None
    will_fail: bool
    source: str
    inputs: dict[str, object]
    forced_status: str | None = None
    forced_error: str | None = None
    #: When the job left ``queued`` (simulator clock); set by the account's concurrency limit or
    #: for pre-loaded history. ``None``: the job starts after its first phase, as without a limit.
    started_clock: float | None = None
    #: Bytes of this job's output when not the configured ``output_size`` (0: an empty output).
    output_size: int | None = None


@dataclass
class SimulatorConfig:
    """How the simulator behaves; every field has a CLI flag of the same name.

    :param phases: the non-terminal statuses a job goes through and how long each lasts (seconds).
    :param failure_rate: fraction of jobs that end ``failed`` instead of ``completed``.
    :param output_size: bytes of each job's output.
    :param output_url_ttl: seconds an ``output_url`` stays valid after the request was read.
    :param output_base_url: origin that output URLs point at; default: the origin the client used.
    :param max_page_size: the list call never returns more than this, whatever ``limit`` asks.
    :param fault_rate: fraction of calls answered with a random transient fault.
    :param clock_offset: seconds added to every time the API reports (``created_at``, ``started_at``,
        ``finished_at``), e.g. ``-8 * 3600`` for an API clock eight hours behind the client's; see
        :func:`~airflow_provider_chamelaion.simulator.state.parse_clock_offset` for the CLI's ``-8h``/``+30d``/``-1y`` form.
    :param max_concurrent_jobs: the account's concurrency limit: at most this many jobs are processed
        at once, in creation order; the rest stay ``queued`` (``None``: no limit).
    :param post_rate_limit: at most this many POSTs per second are accepted; above it a POST is
        refused with 429 and a ``Retry-After`` (whole seconds) without acting (``None``: no limit).
    :param history_size: completed requests the account already holds when the simulator starts or
        is reset (``reference_id`` ``history-<n>``, created a day ago), so listings are realistic.
    :param lost_answer_rate: fraction of POSTs whose answer is lost: the server acts on the call (creates
        the job), then closes the connection without answering.
    :param empty_output_rate: fraction of jobs that complete with an empty (0-byte) output, as a
        broken render would; the output URL still answers 200, with ``Content-Length: 0``.
    """

    api_key: str = "sim-key"
    phases: tuple[tuple[str, float], ...] = (("queued", 0.5), ("running", 1.0))
    failure_rate: float = 0.0
    failure_message: str = "Lip sync failed: no face was detected in the video"
    output_size: int = 256 * 1024
    output_url_ttl: float = 3600.0
    output_base_url: str | None = None
    max_page_size: int = 100
    fault_rate: float = 0.0
    seed: int | None = None
    clock_offset: float = 0.0
    max_concurrent_jobs: int | None = None
    post_rate_limit: float | None = None
    history_size: int = 0
    lost_answer_rate: float = 0.0
    empty_output_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.max_page_size < 1:
            raise ValueError("max_page_size must be at least 1")
        if self.max_concurrent_jobs is not None and self.max_concurrent_jobs < 1:
            raise ValueError("max_concurrent_jobs must be at least 1 (or None for no limit)")
        if self.post_rate_limit is not None and self.post_rate_limit <= 0:
            raise ValueError("post_rate_limit must be positive (or None for no limit)")
        if self.history_size < 0:
            raise ValueError("history_size must not be negative")
        if not 0 <= self.empty_output_rate <= 1:
            raise ValueError("empty_output_rate must be between 0 and 1")


@dataclass
class CallRecord:
    method: str
    path: str
    status: int | None
    had_api_key: bool
    fault: str | None = None
    #: When the call arrived (``time.monotonic()`` of the simulator's process).
    at: float = field(default_factory=time.monotonic)


class SimulatorState:
    """Jobs, faults and the call log of one simulator."""

    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.faults: list[Fault] = []
        self.calls: list[CallRecord] = []
        self.uploads: list[dict[str, int]] = []
        self._fail_next = 0
        self._empty_next = 0
        self._random = random.Random(config.seed)
        self.signing_key = uuid.uuid4().hex
        self.in_flight = 0
        self._by_reference: dict[str, list[Job]] = {}
        self._order: list[Job] = []  # creation order; listings read it from the end (newest first)
        self._waiting: deque[Job] = deque()  # jobs waiting for a slot (concurrency limit), FIFO
        self._running_until: list[float] = []  # heap: when each occupied slot frees
        self._recent_posts: deque[float] = deque()  # accepted POSTs in the last second
        self._preload_history()

    # -- jobs ------------------------------------------------------------------------------------

    def create_job(self, *, reference_id: str | None, source: str, inputs: dict[str, object]) -> Job:
        with self.lock:
            will_fail = self._fail_next > 0 or self._random.random() < self.config.failure_rate
            if self._fail_next:
                self._fail_next -= 1
            empty = self._empty_next > 0 or (
                self.config.empty_output_rate > 0 and self._random.random() < self.config.empty_output_rate
            )
            if self._empty_next:
                self._empty_next -= 1
            job = Job(
                id=str(uuid.uuid4()),
                created_wall=datetime.now(timezone.utc),
                created_clock=self.clock(),
                reference_id=reference_id,
                will_fail=will_fail,
                source=source,
                inputs=inputs,
                output_size=0 if empty else None,
            )
            self._add(job)
            if self.config.max_concurrent_jobs is not None:
                self._waiting.append(job)
            return job

    def _add(self, job: Job) -> None:
        self.jobs[job.id] = job
        self._order.append(job)
        if job.reference_id is not None:
            self._by_reference.setdefault(job.reference_id, []).append(job)

    def _preload_history(self) -> None:
        """The account's older requests (``history_size`` of them), all finished long ago."""
        now_wall = datetime.now(timezone.utc)
        now_clock = self.clock()
        size = self.config.history_size
        for index in range(size):
            age = 86400.0 + (size - index)  # oldest first, a second apart
            self._add(
                Job(
                    id=str(uuid.uuid4()),
                    created_wall=now_wall - timedelta(seconds=age),
                    created_clock=now_clock - age,
                    reference_id=f"history-{index}",
                    will_fail=False,
                    source="urls",
                    inputs={},
                    started_clock=now_clock - age,
                )
            )

    def admit_post(self) -> float | None:
        """Count a POST against ``post_rate_limit``: ``None`` if accepted, else seconds to wait."""
        limit = self.config.post_rate_limit
        if limit is None:
            return None
        with self.lock:
            now = self.clock()
            while self._recent_posts and self._recent_posts[0] <= now - 1.0:
                self._recent_posts.popleft()
            if len(self._recent_posts) >= limit:
                return self._recent_posts[0] + 1.0 - now
            self._recent_posts.append(now)
            return None

    def bury(self, reference_id: str, position: int) -> Job:
        """A completed job of a day ago with ``reference_id``, ``position`` places from the listing's
        oldest end: older history for an item, scattered among the account's other requests."""
        with self.lock:
            now = self.clock()
            job = Job(
                id=str(uuid.uuid4()),
                created_wall=datetime.now(timezone.utc) - timedelta(days=1),
                created_clock=now - 86400.0,
                reference_id=reference_id,
                will_fail=False,
                source="urls",
                inputs={},
                started_clock=now - 86400.0,
            )
            self.jobs[job.id] = job
            self._order.insert(min(position, len(self._order)), job)
            self._by_reference.setdefault(reference_id, []).insert(0, job)
            return job

    def forget(self, job_id: str) -> None:
        """Drop a job from the account (as retention does): later jobs move up one place in the listing."""
        with self.lock:
            job = self.jobs.pop(job_id)
            self._order.remove(job)
            if job.reference_id is not None:
                self._by_reference[job.reference_id].remove(job)

    def fail_next(self, count: int = 1) -> None:
        """Make the next ``count`` jobs fail."""
        with self.lock:
            self._fail_next += count

    def empty_output_next(self, count: int = 1) -> None:
        """Make the next ``count`` jobs complete with an empty (0-byte) output."""
        with self.lock:
            self._empty_next += count

    def output_size_of(self, job: Job) -> int:
        """Bytes of ``job``'s output."""
        return self.config.output_size if job.output_size is None else job.output_size

    def force_status(self, job_id: str, status: str, error_message: str | None = None) -> None:
        """Pin a job to a status (any string), e.g. to test statuses a client does not know."""
        with self.lock:
            job = self.jobs[job_id]
            job.forced_status = status
            job.forced_error = error_message

    def find(self, id_or_reference: str) -> Job | None:
        with self.lock:
            if id_or_reference in self.jobs:
                return self.jobs[id_or_reference]
            matches = self._by_reference.get(id_or_reference)
            return matches[-1] if matches else None  # newest wins

    def listing(self, reference_id: str | None) -> list[Job]:
        with self.lock:
            jobs = (
                list(self._order) if reference_id is None else list(self._by_reference.get(reference_id, []))
            )
        return list(reversed(jobs))  # newest first

    def page(self, reference_id: str | None, offset: int, limit: int) -> tuple[list[Job], int]:
        """One page of the listing, newest first, and the total (without copying the whole history)."""
        with self.lock:
            jobs = self._order if reference_id is None else self._by_reference.get(reference_id, [])
            total = len(jobs)
            stop = max(0, total - offset)
            start = max(0, stop - limit)
            return list(reversed(jobs[start:stop])), total

    def _start_waiting_jobs(self, now: float) -> None:
        """Concurrency limit: give free slots to waiting jobs, oldest first, up to ``now``.

        A job may start once its first phase (the minimum queue time) is over and a slot is free; a
        slot frees when the job holding it finishes. Deterministic on the simulator's clock.
        """
        limit = self.config.max_concurrent_jobs or 0
        phases = self.config.phases
        first = phases[0][1] if phases else 0.0
        processing = sum(duration for _, duration in phases[1:])
        while self._waiting:
            job = self._waiting[0]
            if job.forced_status is not None:
                self._waiting.popleft()  # pinned by a test: holds no slot
                continue
            slot_free = self._running_until[0] if len(self._running_until) >= limit else -math.inf
            start = max(job.created_clock + first, slot_free)
            if start > now:
                return
            if len(self._running_until) >= limit:
                heapq.heappop(self._running_until)
            heapq.heappush(self._running_until, start + processing)
            job.started_clock = start
            self._waiting.popleft()

    def status_of(self, job: Job) -> tuple[str, float | None, float | None]:
        """(status, seconds from creation to start, seconds from creation to finish)."""
        if job.forced_status is not None:
            return job.forced_status, None, None
        now = self.clock()
        if job.started_clock is not None or self.config.max_concurrent_jobs is not None:
            with self.lock:
                self._start_waiting_jobs(now)
            return self._status_after_start(job, now)
        elapsed = now - job.created_clock
        phases = self.config.phases
        # The job "starts" when it leaves its first phase (queued) and finishes after the last one.
        started = phases[0][1] if phases else 0.0
        offset = 0.0
        for index, (status, duration) in enumerate(phases):
            offset += duration
            if elapsed < offset:
                return status, (started if index > 0 else None), None
        return ("failed" if job.will_fail else "completed"), started, offset

    def _status_after_start(self, job: Job, now: float) -> tuple[str, float | None, float | None]:
        """Status of a job whose start is decided by a slot: queued until then, then the later phases."""
        if job.started_clock is None or now < job.started_clock:
            return (self.config.phases[0][0] if self.config.phases else "queued"), None, None
        started = job.started_clock - job.created_clock
        offset = job.started_clock
        for status, duration in self.config.phases[1:]:
            offset += duration
            if now < offset:
                return status, started, None
        return ("failed" if job.will_fail else "completed"), started, offset - job.created_clock

    def describe(self, job: Job, output_origin: str) -> dict[str, object]:
        """The job as a ``LipsyncRequest`` JSON object."""
        status, started, finished = self.status_of(job)
        created = job.created_wall + timedelta(seconds=self.config.clock_offset)  # the API's clock
        payload: dict[str, object] = {"id": job.id, "created_at": _iso(created), "status": status}
        if job.reference_id is not None:
            payload["reference_id"] = job.reference_id
        if started is not None:
            payload["started_at"] = _iso(created + timedelta(seconds=started))
        if finished is not None:
            payload["finished_at"] = _iso(created + timedelta(seconds=finished))
        if status == "completed":
            payload["output_url"] = self.output_url(job, output_origin)
        if status == "failed" or job.forced_error:
            payload["error_message"] = job.forced_error or self.config.failure_message
        return payload

    # -- outputs ---------------------------------------------------------------------------------

    def _signature(self, job_id: str, expires: int) -> str:
        import hashlib
        import hmac

        digest = hmac.new(self.signing_key.encode(), f"{job_id}:{expires}".encode(), hashlib.sha256)
        return digest.hexdigest()[:24]

    def output_url(self, job: Job, origin: str) -> str:
        expires = int(time.time() + self.config.output_url_ttl)
        base = (self.config.output_base_url or origin).rstrip("/")
        return f"{base}/outputs/{job.id}.mp4?expires={expires}&sig={self._signature(job.id, expires)}"

    def check_output_signature(self, job_id: str, expires: str, sig: str) -> str | None:
        """``None`` if the signed URL is valid, else why not."""
        try:
            expires_at = int(expires)
        except ValueError:
            return "malformed expires"
        if sig != self._signature(job_id, expires_at):
            return "bad signature"
        if time.time() > expires_at:
            return "output URL expired"
        return None

    # -- faults and the call log -----------------------------------------------------------------

    def add_fault(self, fault: Fault | None = None, **kwargs: object) -> Fault:
        """Script a fault: ``add_fault(kind="status", status=503, times=3, path="/requests/")``."""
        fault = fault or Fault(**kwargs)  # type: ignore[arg-type]
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_fault(self, method: str, path: str) -> Fault | None:
        if not path.startswith(("/api/", "/outputs/")):
            return None  # health checks and the simulator's own endpoints are never faulted
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.matches(method, path):
                    if fault.after > 0:
                        fault.after -= 1
                        continue
                    fault.times -= 1
                    if fault.times == 0:
                        self.faults.remove(fault)
                    return fault
            if (
                self.config.lost_answer_rate
                and method == "POST"
                and path.startswith("/api/")
                and self._random.random() < self.config.lost_answer_rate
            ):
                return LOST_ANSWER
            if (
                self.config.fault_rate
                and path.startswith("/api/")
                and self._random.random() < self.config.fault_rate
            ):
                choices = RANDOM_POST_FAULTS if method == "POST" else RANDOM_GET_FAULTS
                return self._random.choice(choices)
        return None

    def record(self, record: CallRecord) -> None:
        with self.lock:
            self.calls.append(record)

    def calls_to(self, method: str | None = None, path: str | None = None) -> list[CallRecord]:
        """Recorded calls, filtered by method and a regular expression searched in the path."""
        with self.lock:
            return [
                call
                for call in self.calls
                if (method is None or call.method == method) and (path is None or re.search(path, call.path))
            ]

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Count a call as in flight while it is served (see :meth:`wait_idle`)."""
        with self.lock:
            self.in_flight += 1
        try:
            yield
        finally:
            with self.lock:
                self.in_flight -= 1

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no call is being served; ``False`` if calls were still running at ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.in_flight:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def reset(self, config: SimulatorConfig | None = None) -> None:
        """Forget every job, fault and call; optionally take a new config (random seed and clock reset too)."""
        with self.lock:
            self.jobs.clear()
            self.faults.clear()
            self.calls.clear()
            self.uploads.clear()
            self._fail_next = 0
            self._empty_next = 0
            self._by_reference.clear()
            self._order.clear()
            self._waiting.clear()
            self._running_until.clear()
            self._recent_posts.clear()
            if config is not None:
                self.config = config
                self._random = random.Random(config.seed)
                self.clock = time.monotonic
            self._preload_history()
