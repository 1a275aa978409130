"""Submitting many catalogue items at once: at the account's pace, beside other submitters, stoppable,
never paying twice.

Used by :class:`~airflow_provider_chamelaion.operators.batch.LipsyncBatchGenerateOperator`. Every POST
goes through :meth:`ChamelaionHook.generate` and the one retry policy (:mod:`~airflow_provider_chamelaion.client.retry`), which looks a lost
answer's ``reference_id`` up before ever sending that POST again. What a batch adds on top:

* **One pace** (:class:`SubmitPacer`): the submitters take turns ``1 / rate`` seconds apart, the rate
  being ``submit_rate`` or learned from the first 429s, so a batch runs at the account's limit instead of
  into it. A 429's ``Retry-After`` holds back every submitter; a lost answer holds back only its own.
* **Other submitters** (:class:`SubmissionOrder`): before each chunk of POSTs the newest listing page is
  read back to the last job seen. A job another submitter created meanwhile for one of this batch's items
  is used instead of paying for it again. A batch that finds someone else submitting its items (jobs still
  in flight when it starts, or the same item paid twice at the same moment) *yields*: it submits from the
  far end of the catalogue and keeps a margin from the other's newest jobs, so the two meet once instead
  of racing item by item. An item paid twice anyway is named in a WARNING and in the manifest.
* **Stop means stop**: :attr:`BatchSubmitter.stop` (set by ``on_kill``, or by any exception on the task's
  thread, a timeout included) keeps every POST not yet sent from being sent; POSTs in flight finish, and
  every job created is recorded before :meth:`BatchSubmitter.submit` returns or raises.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_chamelaion.batch.listing import read_newest
from airflow_provider_chamelaion.batch.manifest import NOT_SUBMITTED, REJECTED, ManifestRow
from airflow_provider_chamelaion.client.models import LipsyncRequest, Outcome, parse_api_time
from airflow_provider_chamelaion.exceptions import (
    ChamelaionAuthError,
    ChamelaionConfigError,
    ChamelaionError,
    ChamelaionRateLimitError,
    ChamelaionValidationError,
    LipsyncBatchStopped,
)
from airflow_provider_chamelaion.utils.progress import QuietLog

if TYPE_CHECKING:
    from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

#: Rounds of 429s an item may meet before the batch gives it up (each round waits the Retry-After).
RATE_LIMIT_ROUNDS = 10
#: A learned pace is this share of what the server accepted in the second before its 429.
PACE_SHARE = 0.95
#: The window a learned pace is measured over, seconds (rate limits are per second or per minute).
RATE_WINDOW = 1.0
#: Seconds without a 429 after which a pace below the best one learned goes back up (by half).
RECOVER_AFTER = 5.0
#: Pause after a 429 without ``Retry-After``, seconds; and the cap on one that has it.
DEFAULT_RATE_LIMIT_PAUSE = 1.0
MAX_RATE_LIMIT_PAUSE = 60.0
#: A yielding batch keeps this many chunks of catalogue between its POSTs and another submitter's newest
#: jobs (the other's chunk in flight, and one more)...
YIELD_MARGIN_CHUNKS = 4
#: ...until that submitter has created no job for this batch's items for this long (seconds, this
#: worker's own clock): then it is gone, and the batch submits the rest itself.
YIELD_PATIENCE = 15.0
#: How often a yielding batch reads the listing while it waits, seconds; and how long a batch that found
#: jobs of its items still in flight watches the listing before its first POST, to tell a batch that is
#: submitting them right now (new jobs appear) from one that finished submitting earlier (none do).
YIELD_POLL = 1.0

_OLDEST = datetime.min.replace(tzinfo=timezone.utc)


class SubmitPacer:
    """One pace for every submitter of a batch.

    Each submitter takes a turn (:meth:`acquire`) before a POST; turns are ``1 / rate`` seconds apart
    (none while the rate is unknown). A 429 (:meth:`rate_limited`) holds every submitter back for its
    ``Retry-After`` and, when the pace is learned, sets it to :data:`PACE_SHARE` of the POSTs the server
    accepted in the :data:`RATE_WINDOW` before it, so later POSTs stay under the limit. The 429s of one
    back-off period are logged as one line with their count.

    :param rate: POSTs per second to start with (``None``: as fast as the submitters go, until a 429).
    :param clock: seconds, monotonic; ``wait(stop, seconds)`` waits unless ``stop`` is set (and says
        whether it was): both replaceable so tests run on a fake clock.
    """

    def __init__(
        self,
        rate: float | None,
        log: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float], bool] = threading.Event.wait,
    ) -> None:
        self.rate = rate
        self._log = log
        self._clock = clock
        self._wait = wait
        self._lock = threading.Lock()
        self._next_turn = 0.0
        self._pause_until = 0.0
        self._accepted: deque[float] = deque()
        self._refused_unlogged = 0
        self.refused = 0
        self._last_refusal = 0.0
        self._ceiling: float | None = None

    def acquire(self, stop: threading.Event) -> bool:
        """Wait for this submitter's turn; ``False`` if ``stop`` was set meanwhile (send nothing)."""
        with self._lock:
            now = self._clock()
            self._recover(now)
            turn = max(now, self._next_turn, self._pause_until)
            self._next_turn = turn + (1.0 / self.rate if self.rate else 0.0)
        while True:
            with self._lock:
                now = self._clock()
                turn = max(turn, self._pause_until)  # a 429 while this submitter waited
                if now >= turn:
                    self._log_refused(now)
                    break
            if self._wait(stop, turn - now):
                return False
        return not stop.is_set()

    def accepted(self) -> None:
        with self._lock:
            now = self._clock()
            self._accepted.append(now)
            while self._accepted and self._accepted[0] <= now - RATE_WINDOW:
                self._accepted.popleft()

    def rate_limited(self, retry_after: float | None) -> None:
        """A POST was answered 429: pause everyone, and pace under what the server accepted."""
        with self._lock:
            now = self._clock()
            self.refused += 1
            self._refused_unlogged += 1
            self._last_refusal = now
            accepted = sum(1 for moment in self._accepted if moment > now - RATE_WINDOW)
            if accepted:
                learned = accepted / RATE_WINDOW * PACE_SHARE
                self.rate = learned if self.rate is None else min(self.rate, learned)
                self._ceiling = max(self._ceiling or 0.0, learned)
            pause = DEFAULT_RATE_LIMIT_PAUSE if retry_after is None else retry_after
            self._pause_until = max(self._pause_until, now + min(pause, MAX_RATE_LIMIT_PAUSE))

    def _recover(self, now: float) -> None:
        """Back towards the best pace learned, once the API has refused nothing for a while: a pace
        learned while another batch shared the account's limit must not outlast that batch."""
        if (
            self.rate is not None
            and self._ceiling is not None
            and self.rate < self._ceiling
            and now - self._last_refusal >= RECOVER_AFTER
        ):
            self.rate = min(self._ceiling, self.rate * 1.5)
            self._last_refusal = now

    def flush(self) -> None:
        """Log the 429s not logged yet (at the end of the submissions)."""
        with self._lock:
            self._log_refused(self._clock())

    def _log_refused(self, now: float) -> None:
        if not self._refused_unlogged or now < self._pause_until:
            return
        pace = f"{self.rate:.1f} POSTs/s" if self.rate else "unpaced"
        self._log.warning(
            "The API refused %d POST(s) with 429 (rate limit); every submitter waited as asked, "
            "then went on at %s",
            self._refused_unlogged,
            pace,
        )
        self._refused_unlogged = 0


class SubmissionOrder:
    """Which rows to POST next, given what other submitters are doing.

    Forward, rows go in catalogue order. A *yielding* batch goes from the far end and takes no row
    within ``margin`` catalogue positions of an item another submitter created a job for during this
    batch, leaving those to it (the two then meet once instead of racing row by row).

    :param positions: every row's position in the catalogue, by ``reference_id``.
    :param chunk: rows per :meth:`take` (the POSTs sent between two looks at the listing).
    :param foreign: positions of items another submitter has jobs in flight for.
    """

    def __init__(
        self,
        rows: Sequence[ManifestRow],
        positions: Mapping[str, int],
        chunk: int,
        *,
        yielding: bool = False,
        foreign: Iterable[int] = (),
    ) -> None:
        self._positions = positions
        self._todo = {row.reference_id: row for row in rows}
        self.chunk = chunk
        self.margin = YIELD_MARGIN_CHUNKS * chunk
        self._foreign = sorted(set(foreign))
        self.yielding = False
        self._queue: list[ManifestRow] = sorted(rows, key=self._position)
        self._cursor = 0
        if yielding:
            self.turn_back()

    def _position(self, row: ManifestRow) -> int:
        return self._positions[row.reference_id]

    @property
    def remaining(self) -> int:
        return len(self._todo)

    def take(self) -> list[ManifestRow]:
        """The next rows to POST (at most ``chunk``); empty when none is left or all wait on another."""
        taken: list[ManifestRow] = []
        while len(taken) < self.chunk and self._cursor < len(self._queue):
            row = self._queue[self._cursor]
            if row.reference_id not in self._todo:
                self._cursor += 1
                continue
            if self.yielding and self._near_foreign(self._position(row)):
                break
            del self._todo[row.reference_id]
            taken.append(row)
            self._cursor += 1
        return taken

    def _near_foreign(self, position: int) -> bool:
        index = bisect.bisect_left(self._foreign, position)
        neighbours = self._foreign[max(0, index - 1) : index + 1]
        return any(abs(other - position) <= self.margin for other in neighbours)

    def adopt(self, reference_id: str) -> bool:
        """Take ``reference_id`` off the rows to POST (another submitter's job is used); ``False`` if
        it was not waiting to be posted."""
        return self._todo.pop(reference_id, None) is not None

    def foreign_job(self, reference_id: str) -> None:
        """Another submitter created a job for this item during the batch."""
        position = self._positions.get(reference_id)
        if position is not None:
            bisect.insort(self._foreign, position)

    def turn_back(self) -> None:
        """Yield: submit the rest from the far end of the catalogue, keeping the margin."""
        self.yielding = True
        self._queue = sorted(self._todo.values(), key=self._position, reverse=True)
        self._cursor = 0

    def stop_yielding(self) -> None:
        self.yielding = False


@dataclass
class SubmitReport:
    """What one :meth:`BatchSubmitter.submit` did (for the task log and the tests)."""

    posted: int = 0
    #: Items another submitter created a job for while this batch submitted: used, not paid again.
    adopted: int = 0
    #: (reference_id, this batch's job, the other job): items paid twice, each also in the manifest.
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)
    found_after_lost_answer: int = 0
    listing_calls: int = 0
    yielded: bool = False


class ThreadHooks:
    """One hook per thread (a requests session is not shared between threads), all on one connection.

    The connection is read once, on the task's own thread: the task runner's channel to its supervisor
    is not for concurrent use. The hooks are ``quiet``: their lines about one item go to DEBUG.
    """

    def __init__(self, base: ChamelaionHook, **overrides: Any) -> None:
        from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

        settings = base.get_settings()
        self._make = lambda: ChamelaionHook(
            base.chamelaion_conn_id,
            retry_policy=overrides.get("retry_policy", base.retry_policy),
            timeout=base.timeout,
            download_timeout=base.download_timeout,
            settings=settings,
            quiet=True,
        )
        self._local = threading.local()
        self._all: list[ChamelaionHook] = []
        self._lock = threading.Lock()

    def get(self) -> ChamelaionHook:
        hook = getattr(self._local, "hook", None)
        if hook is None:
            hook = self._make()
            self._local.hook = hook
            with self._lock:
                self._all.append(hook)
        return hook

    def close(self) -> None:
        for hook in self._all:
            hook.close()


def _created(request: LipsyncRequest) -> tuple[datetime, str]:
    """Creation order as the API tells it (two API times compared, never the worker's clock)."""
    return parse_api_time(request.created_at) or _OLDEST, request.id


class BatchSubmitter:
    """Submits rows of a batch concurrently, at the account's pace, never paying twice.

    :param hook: the task's hook (its connection is read on the task's thread; the listing is read
        through it).
    :param concurrency: POSTs in flight at once (and rows per chunk between two looks at the listing).
    :param rate: POSTs per second (``None``: learned from the API's 429s).
    :param page_size: the listing ``limit`` to ask for.
    """

    def __init__(
        self,
        hook: ChamelaionHook,
        *,
        concurrency: int,
        log: Any,
        rate: float | None = None,
        page_size: int = 100,
    ) -> None:
        self.stop = threading.Event()
        self.pacer = SubmitPacer(rate, log)
        # 429s are paced here for the whole batch; a lost answer's back-off holds only its own thread,
        # and a stop interrupts it.
        self.policy = dataclasses.replace(
            hook.retry_policy,
            retry_rate_limited=False,
            sleep=self._sleep,
            logger=QuietLog(logging.getLogger("airflow_provider_chamelaion.client.retry")),
        )
        self.hooks = ThreadHooks(hook, retry_policy=self.policy)
        self._hook = hook
        self.concurrency = concurrency
        self.page_size = page_size
        self.log = log
        self.report = SubmitReport()
        self._lock = threading.Lock()
        #: A wrong key or connection: stops every submission not yet sent, instead of 10,000 failures.
        self._fatal: BaseException | None = None
        #: Live jobs other submitters created for rows this batch has taken but not recorded yet.
        self._foreign: dict[str, LipsyncRequest] = {}
        #: Rows whose POST has been sent and not answered yet, and jobs listed for them meanwhile: the job
        #: may be this batch's own (created, its answer on the way) or another submitter's.
        self._sent: set[str] = set()
        self._listed_while_sent: dict[str, LipsyncRequest] = {}
        #: Every listed job of this batch's items, by id (for which of two jobs is newer).
        self._listed: dict[str, LipsyncRequest] = {}
        self._watermark: tuple[str | None, int] = (None, 0)
        self._recorded = 0
        self._duplicate_looks = 0

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise LipsyncBatchStopped("the batch was stopped; this POST was not sent again")

    # -- one item, on a submitter thread ---------------------------------------------------------

    def _post(self, row: ManifestRow) -> str | LipsyncRequest:
        """POST ``row``'s job; or, if another submitter just created one for it, that job."""
        if self._fatal is not None:
            raise LipsyncBatchStopped(f"not submitted: an earlier submission failed for good ({self._fatal})")
        hook = self.hooks.get()

        def find_lost_job(error: BaseException) -> str | None:
            # The POST may have created the job before its answer was lost: look before sending again.
            alive = [r for r in hook.find_requests(row.reference_id) if r.outcome is not Outcome.FAILED]
            if not alive:
                return None
            with self._lock:
                self.report.found_after_lost_answer += 1
            return alive[0].id

        last: BaseException | None = None
        for _round in range(RATE_LIMIT_ROUNDS):
            if not self.pacer.acquire(self.stop):
                raise LipsyncBatchStopped("the batch was stopped before this POST was sent")
            with self._lock:
                other = self._foreign.get(row.reference_id)
                if other is None:
                    self._sent.add(row.reference_id)
            if other is not None:
                return other  # created by another submitter while this row waited for its turn
            try:
                request_id = hook.submit(row.job_inputs(), reconcile=find_lost_job)
            except ChamelaionRateLimitError as err:
                self.pacer.rate_limited(err.retry_after)
                last = err
                continue
            except (ChamelaionAuthError, ChamelaionConfigError) as err:
                self._fatal = err
                raise
            self.pacer.accepted()
            return request_id
        assert last is not None
        raise last

    # -- the batch, on the task's thread ---------------------------------------------------------

    def submit(
        self,
        rows: Sequence[ManifestRow],
        every_row: Mapping[str, ManifestRow],
        positions: Mapping[str, int],
        *,
        watermark: tuple[str | None, int],
        watch_first: bool = False,
    ) -> SubmitReport:
        """POST a job for each of ``rows``, recording each outcome in its row; raise after all if any
        failed for good. Rows another submitter creates a job for meanwhile get that job instead.

        :param every_row: all rows of the batch, by ``reference_id`` (jobs for them are watched for).
        :param positions: every row's position in the catalogue.
        :param watermark: the newest job of the listing when the batch last read it, and the total then.
        :param watch_first: jobs of these items are in flight, maybe from a batch still submitting: start
            from the far end, and watch the listing for :data:`YIELD_POLL` seconds before the first POST.
        """
        # A batch that found jobs of its items in flight starts from the far end: if the batch that made
        # them is still submitting (perhaps paused by a Retry-After right now), the two meet once, and
        # this one keeps its margin from the other's new jobs as soon as it sees them.
        order = SubmissionOrder(rows, positions, self.concurrency, yielding=watch_first)
        self.report.yielded = watch_first
        own = {row.request_id for row in every_row.values() if row.request_id and row.source == "submitted"}
        total, step = len(rows), max(1, len(rows) // 10)
        pending: dict[Future[str | LipsyncRequest], ManifestRow] = {}
        errors: list[tuple[ManifestRow, BaseException]] = []
        self._watermark = watermark
        self._recorded = 0
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="chamelaion-submit")
        waiting_since: float | None = None
        remaining_then = order.remaining
        try:
            if watch_first:
                self.stop.wait(YIELD_POLL)
            self._watch(order, every_row, own, starting=True, second=watch_first)
            looked = True
            while not self.stop.is_set() and self._fatal is None:
                if not looked:
                    self._watch(order, every_row, own, starting=False, second=watch_first)
                looked = False
                chunk = order.take()
                if not chunk:
                    if not order.remaining:
                        break
                    # Yielding: the rows left sit next to another submitter's newest jobs.
                    self._collect(pending, own, errors, at_most=0)
                    now = time.monotonic()
                    if order.remaining < remaining_then or waiting_since is None:
                        waiting_since, remaining_then = now, order.remaining
                    elif now - waiting_since >= YIELD_PATIENCE:
                        self.log.warning(
                            "Another submitter created no job for this batch's %d remaining item(s) for "
                            "%.0f s; submitting them now",
                            order.remaining,
                            YIELD_PATIENCE,
                        )
                        order.stop_yielding()
                    self.stop.wait(YIELD_POLL)
                    continue
                for row in chunk:
                    pending[pool.submit(self._post, row)] = row
                # At most two chunks outstanding: the next look at the listing overlaps these POSTs.
                done_before = self._recorded
                self._collect(pending, own, errors, at_most=self.concurrency)
                self._progress(done_before, self._recorded, total, step)
            done_before = self._recorded
            self._collect(pending, own, errors, at_most=0)
            self._progress(done_before, self._recorded, total, step)
            if not self.stop.is_set():
                self._look(order, every_row, own)  # items paid twice in the last chunk
        except BaseException:
            self.stop.set()  # a timeout or a kill on the task's thread: nothing more is sent
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._collect(pending, own, errors, at_most=0)  # every job created is recorded
            self.hooks.close()
            self.pacer.flush()
        stopped = [row for row, err in errors if isinstance(err, LipsyncBatchStopped)]
        failed = [(row, err) for row, err in errors if not isinstance(err, LipsyncBatchStopped)]
        if failed:
            row, first = failed[0]
            left = order.remaining + len(stopped)
            unsent = f", {left} not sent after that" if left else ""
            raise ChamelaionError(
                f"{len(failed)} of {total} submissions failed{unsent}; the first, {row.reference_id!r}: "
                f"{first}. Everything submitted is in the manifest; a retry submits only the rest"
            ) from first
        if stopped or (self.stop.is_set() and order.remaining):
            raise LipsyncBatchStopped(
                f"the batch was stopped: {len(stopped) + order.remaining} item(s) not submitted; every job "
                "created is in the manifest, and a retry submits only the rest"
            )
        return self.report

    def _progress(self, before: int, after: int, total: int, step: int) -> None:
        if after // step > before // step or (after == total and before < total):
            self.log.info("Submitted %d of %d", after, total)

    def _collect(
        self,
        pending: dict[Future[str | LipsyncRequest], ManifestRow],
        own: set[str],
        errors: list[tuple[ManifestRow, BaseException]],
        *,
        at_most: int,
    ) -> None:
        """Record finished POSTs, waiting until no more than ``at_most`` are outstanding."""
        while pending:
            finished = [future for future in pending if future.done()]
            if not finished:
                if len(pending) <= at_most:
                    return
                wait(list(pending), return_when=FIRST_COMPLETED)
                continue
            for future in finished:
                self._record(pending.pop(future), future, own, errors)
            if len(pending) <= at_most and not any(future.done() for future in pending):
                return

    def _record(
        self,
        row: ManifestRow,
        future: Future[str | LipsyncRequest],
        own: set[str],
        errors: list[tuple[ManifestRow, BaseException]],
    ) -> None:
        self._recorded += 1
        with self._lock:
            other = self._foreign.pop(row.reference_id, None)
            seen = self._listed_while_sent.pop(row.reference_id, None)
            self._sent.discard(row.reference_id)
        other = other or seen
        if future.cancelled():
            errors.append((row, LipsyncBatchStopped("not sent: the batch was stopped")))
            return
        try:
            outcome = future.result()
        except ChamelaionValidationError as err:
            # The API refused this item (nothing was created): a failed row, not a failed batch.
            row.status, row.error_message, row.source = REJECTED, err.message, "submitted"
            return
        except Exception as err:
            errors.append((row, err))
            return
        if isinstance(outcome, LipsyncRequest):  # another submitter's job, seen just before the POST
            row.use(outcome, "reused")
            self.report.adopted += 1
            return
        row.request_id, row.status, row.source = outcome, "queued", "submitted"
        row.output_url = row.error_message = None
        own.add(outcome)
        self.report.posted += 1
        if other is not None and other.id != outcome:
            self._duplicate(row, other)

    def _watch(
        self,
        order: SubmissionOrder,
        rows: Mapping[str, ManifestRow],
        own: set[str],
        *,
        starting: bool,
        second: bool,
    ) -> None:
        """Look at the listing, and give way to another submitter when this batch is the one to.

        Who gives way, so that two batches never both do (or both don't): a batch that started while jobs
        of its items were already in flight (``second``) gives way as soon as it sees another submitter
        create one; any batch gives way if it sees one before its own first POST; and two batches that
        started at the same moment (neither is second) find out from items paid twice: after two looks
        in a row that find some, the one whose job is the newer gives way (both read the same two
        creation times from the API, so they agree).
        """
        others, duplicates = self._look(order, rows, own)
        self._duplicate_looks = self._duplicate_looks + 1 if duplicates else 0
        if order.yielding:
            return
        if (others or duplicates) and (starting or second):
            reason = "creating jobs for this batch's items right now"
        elif self._duplicate_looks >= 2 and any(
            ours is None or _created(ours) > _created(theirs) for ours, theirs in duplicates
        ):
            reason = "submitting this batch's items at the same moment"
        else:
            return
        self.log.warning(
            "Another submitter is %s; this batch now submits from the far end of the catalogue and leaves "
            "it the items it is working on",
            reason,
        )
        order.turn_back()
        self.report.yielded = True

    def _look(
        self, order: SubmissionOrder, rows: Mapping[str, ManifestRow], own: set[str]
    ) -> tuple[int, list[tuple[LipsyncRequest | None, LipsyncRequest]]]:
        """Read the jobs created since the last look; use, or name, those of this batch's items.

        :return: how many jobs another submitter created for items this batch had not paid for yet, and
            the items found paid twice (this batch's job as listed, or ``None`` if not listed yet; the
            other job).
        """
        since_id, since_total = self._watermark
        new = read_newest(self._hook, since_id, since_total=since_total, page_size=self.page_size)
        self.report.listing_calls += new.pages
        self._watermark = (new.newest_id, new.total)
        adopted = 0
        duplicates: list[tuple[LipsyncRequest | None, LipsyncRequest]] = []
        for request in new.requests:
            row = rows.get(request.reference_id or "")
            if row is None:
                continue
            self._listed[request.id] = request
            if request.id in own or request.outcome is Outcome.FAILED:
                continue
            if order.adopt(row.reference_id):
                row.use(request, "reused")
                order.foreign_job(row.reference_id)
                self.report.adopted += 1
                adopted += 1
            elif row.status == NOT_SUBMITTED and row.request_id is None:
                with self._lock:
                    if row.reference_id in self._sent:
                        # Likely this batch's own job, its answer on the way: decided when it comes.
                        self._listed_while_sent.setdefault(row.reference_id, request)
                        continue
                    self._foreign.setdefault(row.reference_id, request)  # its POST will not be sent
                order.foreign_job(row.reference_id)
                adopted += 1
            elif (
                row.source == "submitted"
                and row.request_id
                and request.id != row.request_id
                and self._duplicate(row, request)
            ):
                order.foreign_job(row.reference_id)
                duplicates.append((self._listed.get(row.request_id), request))
        return adopted, duplicates

    def _duplicate(self, row: ManifestRow, other: LipsyncRequest) -> bool:
        """Name an item paid twice (once); ``False`` if it was named already."""
        if other.id in row.duplicates:
            return False
        row.duplicates.append(other.id)
        self.report.duplicates.append((row.reference_id, str(row.request_id), other.id))
        self.log.warning(
            "reference_id %r was paid twice: this batch's job %s and job %s, created by another submitter "
            "at the same moment (both are in the manifest; cancel one if your account allows it)",
            row.reference_id,
            row.request_id,
            other.id,
        )
        return True
