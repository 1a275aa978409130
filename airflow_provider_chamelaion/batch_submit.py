"""Submitting many catalogue items at once: bounded concurrency, one shared back-off, never paying twice.

Used by :class:`~airflow_provider_chamelaion.operators.batch.LipsyncBatchGenerateOperator`. Every POST
goes through :meth:`ChamelaionHook.generate` and its retry policy (:mod:`.retry`); what this module adds
is what a batch needs on top: one pause for all submitters when the server pushes back, one hook per
thread, and the look-up by ``reference_id`` that the retry policy runs before resending a POST whose answer was
lost.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

from airflow_provider_chamelaion.catalogue import CatalogueItem
from airflow_provider_chamelaion.exceptions import (
    ChamelaionAuthError,
    ChamelaionConfigError,
    ChamelaionError,
    ChamelaionRateLimitError,
    ChamelaionValidationError,
)
from airflow_provider_chamelaion.manifest import REJECTED, ManifestRow
from airflow_provider_chamelaion.models import Outcome

if TYPE_CHECKING:
    from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

#: Rounds of the hook's own 429 retries an item may go through before the batch gives it up.
RATE_LIMIT_ROUNDS = 10


class SharedBackoff:
    """One pause for the whole batch: a 429 (or a lost answer) seen by one submitter holds back all.

    Each submitter calls :meth:`wait` before a POST; the retry policy of every submitter's hook sleeps
    through :meth:`pause`, so the server's ``Retry-After`` applies to the batch, not just to one thread
    that would otherwise be replaced at once by seven others hitting the same limit.
    """

    def __init__(
        self, sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic
    ):
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._until = 0.0
        self.pauses = 0

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)
            self.pauses += 1
        self.wait()

    def wait(self) -> None:
        while True:
            with self._lock:
                until = self._until
                remaining = until - self._clock()
            if remaining <= 0:
                return
            self._sleep(remaining)
            with self._lock:
                if self._until == until:  # not extended while this thread slept
                    return


class PerItemLog:
    """A batch's hook log: the hook's per-item lines (submitted, downloaded) at DEBUG, the rest as they are.

    A batch of 10,000 would otherwise write 20,000 such lines to its task log; the batch logs its own
    progress ("Submitted 3000 of 10000") instead.
    """

    def __init__(self, log: Any) -> None:
        self._log = log

    def info(self, *args: Any, **kwargs: Any) -> None:
        self._log.debug(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


class ThreadHooks:
    """One hook per thread (a requests session is not shared between threads), all on one connection.

    The connection is read once, on the task's own thread: the task runner's channel to its supervisor
    is not for concurrent use. The hooks' per-item INFO lines go to DEBUG (:class:`PerItemLog`).
    """

    def __init__(self, base: ChamelaionHook, **overrides: Any) -> None:
        from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

        self._settings = base.get_settings()
        self._make = lambda: ChamelaionHook(
            base.chamelaion_conn_id,
            retry_policy=overrides.get("retry_policy", base.retry_policy),
            timeout=base.timeout,
            download_timeout=base.download_timeout,
        )
        self._local = threading.local()
        self._all: list[ChamelaionHook] = []
        self._lock = threading.Lock()

    def get(self) -> ChamelaionHook:
        hook = getattr(self._local, "hook", None)
        if hook is None:
            hook = self._make()
            hook._settings = self._settings  # the connection as read on the task's thread
            hook._log = PerItemLog(hook.log)
            self._local.hook = hook
            with self._lock:
                self._all.append(hook)
        return hook

    def close(self) -> None:
        for hook in self._all:
            hook.close()


class BatchSubmitter:
    """Submits catalogue items concurrently, never paying twice.

    Every POST goes through :meth:`ChamelaionHook.generate` and the one retry policy: 429s and
    connections never made are retried; when the answer to a POST is lost (a dropped connection, a 5xx,
    an unreadable body) the policy has the item's ``reference_id`` looked up before the POST is ever
    sent again (``reconcile``), as for the single operator.
    """

    def __init__(self, hook: ChamelaionHook, *, concurrency: int, log: Any) -> None:
        self.gate = SharedBackoff(hook.retry_policy.sleep)
        self.policy = dataclasses.replace(hook.retry_policy, sleep=self.gate.pause)
        self.hooks = ThreadHooks(hook, retry_policy=self.policy)
        self.concurrency = concurrency
        self.log = log
        self.found_after_lost_answer = 0
        self._lock = threading.Lock()
        #: A wrong key or connection: stops every submission not yet sent, instead of 10,000 failures.
        self._fatal: BaseException | None = None

    def submit_one(self, item: CatalogueItem) -> str:
        if self._fatal is not None:
            raise ChamelaionError(f"not submitted: an earlier submission failed for good ({self._fatal})")
        hook = self.hooks.get()
        try:
            return self._submit_one(hook, item)
        except (ChamelaionAuthError, ChamelaionConfigError) as err:
            self._fatal = err
            raise

    def _submit_one(self, hook: ChamelaionHook, item: CatalogueItem) -> str:
        def find_lost_job(error: BaseException) -> str | None:
            # The POST may have created the job before its answer was lost: look before sending again.
            alive = [r for r in hook.find_requests(item.reference_id) if r.outcome is not Outcome.FAILED]
            if not alive:
                return None
            with self._lock:
                self.found_after_lost_answer += 1
            return alive[0].id

        rate_limited_rounds = 0
        while True:
            self.gate.wait()
            try:
                return hook.generate(
                    item.video_url,
                    item.audio_url,
                    reference_id=item.reference_id,
                    disable_active_speaker_detection=item.disable_active_speaker_detection,
                    reconcile=find_lost_job,
                )
            except ChamelaionRateLimitError as err:
                # Every attempt of the hook's policy got a 429: nothing was created. Wait with the batch.
                rate_limited_rounds += 1
                if rate_limited_rounds >= RATE_LIMIT_ROUNDS:
                    raise
                self.gate.pause(self.policy.wait_before_retry(err, self.policy.max_attempts))

    def submit(self, items: Sequence[CatalogueItem], rows: dict[str, ManifestRow]) -> None:
        """Submit ``items``, recording each outcome in ``rows``; raise after all if any failed for good."""
        if not items:
            return
        errors: list[tuple[CatalogueItem, BaseException]] = []
        step = max(1, len(items) // 10)
        done = 0
        try:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="chamelaion-submit") as pool:
                futures = {pool.submit(self.submit_one, item): item for item in items}
                for future in as_completed(futures):
                    item = futures[future]
                    row = rows[item.reference_id]
                    try:
                        request_id = future.result()
                    except ChamelaionValidationError as err:
                        # The API refused this item (nothing was created): a failed row, not a failed batch.
                        row.status, row.error_message, row.source = REJECTED, err.message, "submitted"
                    except Exception as err:
                        errors.append((item, err))
                    else:
                        row.request_id, row.status, row.source = request_id, "queued", "submitted"
                    done += 1
                    if done % step == 0 or done == len(items):
                        self.log.info("Submitted %d of %d", done, len(items))
        finally:
            self.hooks.close()
        if errors:
            item, first = errors[0]
            raise ChamelaionError(
                f"{len(errors)} of {len(items)} submissions failed; the first, {item.reference_id!r} "
                f"(row {item.row}): {first}. Everything submitted is in the manifest; a retry submits only "
                "the rest"
            ) from first
