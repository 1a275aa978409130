"""LipsyncBatchTrigger: waits on a whole batch of lip-sync jobs in the triggerer, one trigger per batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal, TypedDict

from airflow_provider_chamelaion.batch.listing import ListingScan
from airflow_provider_chamelaion.batch.manifest import (
    Manifest,
    ManifestOwner,
    ManifestRow,
    count_stages,
    format_counts,
    load_manifest,
    save_manifest,
)
from airflow_provider_chamelaion.client.models import LipsyncRequest, Outcome
from airflow_provider_chamelaion.client.settings import DEFAULT_CONN_ID
from airflow_provider_chamelaion.exceptions import ChamelaionAPIError, ChamelaionConfigError, is_permanent
from airflow_provider_chamelaion.version_compat import BaseTrigger, TriggerEvent

BatchStatus = Literal["done", "wave", "timeout", "error"]
BATCH_STATUSES: frozenset[str] = frozenset({"done", "wave", "timeout", "error"})


class BatchEvent(TypedDict):
    """The payload of every event the batch trigger yields: counts and a reference, never the rows."""

    status: BatchStatus
    manifest_path: str
    counts: dict[str, int]
    end_time: float | None
    message: str
    #: The try that deferred: a later try handed this event (Airflow 3.0's retries) starts over.
    try_number: int | None


class LipsyncBatchTrigger(BaseTrigger):
    """Polls every unfinished job of a batch manifest until they have all finished, then yields one event.

    Each poll cycle costs the fewest calls it can: it walks the listing (newest first, 100 jobs a page)
    while the pages left are fewer than the jobs still unseen, and reads the rest one by one
    (:class:`~airflow_provider_chamelaion.batch.listing.ListingScan`). A batch's own jobs are the newest on
    the account, so 10,000 pending jobs cost about 100 calls a cycle instead of 10,000.

    The manifest is read and written on a thread (it may be on object storage), so the event loop never
    blocks; it is written back with the final statuses before the event, so the worker resumes without
    a call. Progress counts are logged when they change. Serialized kwargs are the manifest's path, the
    connection id (never the key), the poll interval, an absolute deadline and two numbers, so a
    triggerer restart re-creates the trigger and resumes from the manifest. The kwargs also name the task
    instance that owns the manifest: a manifest at the path that another task instance wrote ends the
    wait with an ``error`` event instead of reporting its rows.

    Event statuses: ``done`` (every job finished), ``wave`` (with ``resume_when_in_flight_at_most``:
    enough slots are free to submit the next wave), ``timeout`` and ``error`` (permanent API error, or
    ``max_consecutive_errors`` failed cycles in a row). A ``wave`` is never handed back after the deadline:
    then the event is ``timeout``.

    :param manifest_path: the batch manifest (local or object-storage path).
    :param chamelaion_conn_id: the Airflow connection.
    :param poll_interval: seconds between poll cycles.
    :param end_time: UNIX time after which the wait ends with a ``timeout`` event; ``None``: never.
    :param resume_when_in_flight_at_most: end with ``wave`` once no more than this many jobs are queued
        or running and items wait to be submitted (``None``: wait for every job).
    :param page_size: the listing ``limit`` to ask for.
    :param max_consecutive_errors: failed poll cycles in a row that end the wait with ``error``.
    :param lookup_concurrency: status GETs in flight at once, for jobs the listing does not cover.
    :param owner: the task instance the manifest must belong to (``dag_id``, ``task_id``, ``run_id``,
        ``map_index``); ``None`` checks nothing.
    :param try_number: the deferring try, echoed in the event.
    """

    def __init__(
        self,
        manifest_path: str,
        chamelaion_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 30.0,
        end_time: float | None = None,
        resume_when_in_flight_at_most: int | None = None,
        page_size: int = 100,
        max_consecutive_errors: int = 10,
        lookup_concurrency: int = 10,
        owner: dict[str, Any] | None = None,
        try_number: int | None = None,
    ) -> None:
        super().__init__()
        self.manifest_path = manifest_path
        self.chamelaion_conn_id = chamelaion_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = None if end_time is None else float(end_time)
        self.resume_when_in_flight_at_most = (
            None if resume_when_in_flight_at_most is None else int(resume_when_in_flight_at_most)
        )
        self.page_size = int(page_size)
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.lookup_concurrency = int(lookup_concurrency)
        self.owner = None if owner is None else ManifestOwner.from_dict(owner).to_dict()
        self.try_number = None if try_number is None else int(try_number)
        #: (jobs pending, API calls) of every poll cycle so far (for logs and tests).
        self.cycles: list[tuple[int, int]] = []
        self._horizon: tuple[int, int] | None = None
        #: The rows whose job this batch submitted, by reference_id (for jobs another submitter made).
        self._submitted: dict[str, ManifestRow] = {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "manifest_path": self.manifest_path,
                "chamelaion_conn_id": self.chamelaion_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "resume_when_in_flight_at_most": self.resume_when_in_flight_at_most,
                "page_size": self.page_size,
                "max_consecutive_errors": self.max_consecutive_errors,
                "lookup_concurrency": self.lookup_concurrency,
                "owner": self.owner,
                "try_number": self.try_number,
            },
        )

    def _hook(self) -> Any:
        from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook  # see LipsyncRequestTrigger

        return ChamelaionHook(self.chamelaion_conn_id)

    def _event(self, status: BatchStatus, rows: list[ManifestRow], message: str) -> TriggerEvent:
        return TriggerEvent(
            BatchEvent(
                status=status,
                manifest_path=self.manifest_path,
                counts=count_stages(rows),
                end_time=self.end_time,
                message=message,
                try_number=self.try_number,
            )
        )

    async def _poll(self, hook: Any, client: Any, pending: dict[str, ManifestRow]) -> int:
        """Refresh every pending row; return the API calls it took."""
        scan = ListingScan(self.page_size, horizon=self._horizon)
        unseen = set(pending)
        deepest = 0  # just past the deepest job seen that is still in flight
        while (offset := scan.next_offset(len(unseen))) is not None:
            page = await hook.alist_requests(limit=self.page_size, offset=offset, client=client)
            for position, request in enumerate(scan.feed(page), start=offset + 1):
                if request.id in unseen:
                    row = pending[request.id]
                    row.update(request)
                    unseen.discard(request.id)
                    if row.in_flight:
                        deepest = max(deepest, position)
                else:
                    self._note_duplicate(request)
        # Next cycle, pages go no deeper than where jobs still in flight were seen (plus what was
        # created since): once most of a batch has finished, its rest costs a page or two, not a walk.
        self._horizon = (deepest, scan.total) if scan.total is not None and not unseen else None
        gate = asyncio.Semaphore(self.lookup_concurrency)

        async def look_up(request_id: str) -> None:
            async with gate:
                pending[request_id].update(await hook.aget_request(request_id, client=client))

        await asyncio.gather(*(look_up(request_id) for request_id in sorted(unseen)))
        return scan.pages + len(unseen)

    def _note_duplicate(self, request: LipsyncRequest) -> None:
        """A live job of one of this batch's items that is not the batch's own: another submitter paid for
        the item too (at the same moment, or since). Named in the manifest and the log, once."""
        row = self._submitted.get(request.reference_id or "")
        if (
            row is None
            or request.id == row.request_id
            or request.id in row.duplicates
            or request.outcome is Outcome.FAILED
        ):
            return
        row.duplicates.append(request.id)
        self.log.warning(
            "Another live job %s has reference_id %r, whose job in this batch is %s: the item is paid twice "
            "(both are in the manifest)",
            request.id,
            row.reference_id,
            row.request_id,
        )

    def _resume_for_wave(self, counts: dict[str, int]) -> bool:
        limit = self.resume_when_in_flight_at_most
        return (
            limit is not None
            and counts["not_submitted"] > 0
            and counts["queued"] + counts["running"] <= limit
        )

    def _read(self) -> Manifest:
        manifest = load_manifest(self.manifest_path)
        assert manifest is not None
        if self.owner is not None:
            manifest.check_owner(ManifestOwner.from_dict(self.owner), self.manifest_path)
        return manifest

    async def run(self) -> AsyncIterator[TriggerEvent]:
        rows: list[ManifestRow] = []
        try:
            manifest = await asyncio.to_thread(self._read)
            rows = manifest.rows
            by_id = {row.request_id: row for row in rows if row.request_id}
            self._submitted = {row.reference_id: row for row in rows if row.source == "submitted"}
            hook = self._hook()
            reported: dict[str, int] | None = None
            failures = 0
            async with hook.shared_async_client() as client:
                while True:
                    pending = {request_id: row for request_id, row in by_id.items() if row.in_flight}
                    if pending:
                        try:
                            cost = await self._poll(hook, client, pending)
                        except (ChamelaionAPIError, ChamelaionConfigError) as err:
                            failures += 1
                            self.log.warning(
                                "Poll cycle %d (of at most %d in a row) failed: %s",
                                failures,
                                self.max_consecutive_errors,
                                err,
                            )
                            if is_permanent(err) or failures >= self.max_consecutive_errors:
                                await asyncio.to_thread(save_manifest, self.manifest_path, manifest)
                                yield self._event("error", rows, f"Stopped waiting on the batch: {err}")
                                return
                        else:
                            failures = 0
                            self.cycles.append((len(pending), cost))
                            self.log.debug("Poll cycle: %d API calls for %d jobs", cost, len(pending))
                    counts = count_stages(rows)
                    if counts != reported:  # a log line per change, not per poll
                        self.log.info("Batch of %d: %s", len(rows), format_counts(counts))
                        reported = counts
                    finished = counts["queued"] + counts["running"] == 0
                    remaining = None if self.end_time is None else self.end_time - time.time()
                    late = remaining is not None and remaining <= 0
                    if (finished and not counts["not_submitted"]) or (
                        not late and (finished or self._resume_for_wave(counts))
                    ):
                        await asyncio.to_thread(save_manifest, self.manifest_path, manifest)
                        status: BatchStatus = "wave" if counts["not_submitted"] else "done"
                        yield self._event(status, rows, f"Batch of {len(rows)}: {format_counts(counts)}")
                        return
                    if late:
                        await asyncio.to_thread(save_manifest, self.manifest_path, manifest)
                        yield self._event(
                            "timeout",
                            rows,
                            f"The batch did not finish by its deadline: {format_counts(counts)}",
                        )
                        return
                    await asyncio.sleep(
                        self.poll_interval if remaining is None else min(self.poll_interval, remaining)
                    )
        except Exception as err:  # a bug or an unreadable manifest still ends in exactly one event
            self.log.exception("Waiting on the batch in %s failed unexpectedly", self.manifest_path)
            yield self._event("error", rows, f"Stopped waiting on the batch: {type(err).__name__}: {err}")


__all__ = ["BatchEvent", "LipsyncBatchTrigger"]
