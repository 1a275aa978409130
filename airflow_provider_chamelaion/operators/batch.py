"""Batch operators for catalogue backfills: submit and wait on thousands of jobs in one task, download them.

Why not one mapped task per item: Airflow's per-task overhead (scheduling, a worker slot, a trigger row,
XCom rows, logs) dominates a job API that only needs a POST and a few polls, and ``[core]
max_map_length`` (1,024 by default) caps a mapped task. One batch task reconciles the whole catalogue
with a few listing pages, submits what is missing concurrently, and waits in one trigger.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_chamelaion.batch_submit import BatchSubmitter, ThreadHooks
from airflow_provider_chamelaion.catalogue import (
    CatalogueItem,
    CataloguePath,
    CatalogueSource,
    as_path,
    load_catalogue,
)
from airflow_provider_chamelaion.downloads_record import (
    FLUSH_EVERY_AT_LEAST,
    RECORD_FOLDER,
    DownloadsRecord,
    holds_output,
    newest_entries,
    read_records,
    record_name,
)
from airflow_provider_chamelaion.events import LipsyncWaitTimeout
from airflow_provider_chamelaion.exceptions import (
    ChamelaionConfigError,
    ChamelaionError,
)
from airflow_provider_chamelaion.listing import reconcile
from airflow_provider_chamelaion.manifest import (
    NOT_SUBMITTED,
    ManifestRow,
    count_stages,
    format_counts,
    read_manifest,
    write_manifest,
)
from airflow_provider_chamelaion.media import check_destination, check_storage_location, file_sizes
from airflow_provider_chamelaion.models import LipsyncRequest
from airflow_provider_chamelaion.operators.lipsync import XCOM_RETURN_KEY
from airflow_provider_chamelaion.version_compat import BaseOperator

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
    from airflow_provider_chamelaion.version_compat import Context, ObjectStoragePath

#: How many failed items a batch failure names.
NAMED_FAILURES = 5


class LipsyncBatchFailedError(ChamelaionError):
    """More jobs of a batch failed than its ``max_failure_rate`` accepts."""


class LipsyncBatchGenerateOperator(BaseOperator):
    """Submits a whole catalogue of lip-sync jobs, reusing every job already paid for, and waits for them.

    The catalogue is validated whole before any HTTP call. Then a few listing pages find, for every
    item, the newest job with its ``reference_id`` that has not failed (the batch's re-run reuses those
    and resubmits only failed or missing items); the rest is submitted concurrently with one shared
    back-off on 429, and the whole batch waits in one trigger (:class:`LipsyncBatchTrigger`).

    The result is a JSON Lines manifest at ``manifest_path`` (``reference_id``, ``request_id``,
    ``status``, ``output_url``, ``error_message``, ``source``: ``submitted`` or ``reused``); XCom gets a
    small summary (counts and the manifest's path). When jobs fail, the task fails once all have
    finished, naming how many and the first few with the API's messages, unless their share is within
    ``max_failure_rate``.

    :param catalogue: a list of items (templated; e.g. an upstream task's output), or a local or
        object-storage path of a JSON Lines or CSV catalogue (templated). Items have ``video_url``,
        ``audio_url``, ``reference_id`` and optionally ``disable_active_speaker_detection``.
    :param manifest_path: where to write the manifest, local or object storage (templated), e.g.
        ``s3://bucket/backfills/{{ run_id }}/manifest.jsonl``. Worker and triggerer must both reach it.
    :param catalogue_format: ``jsonl`` or ``csv``; default: from the file name.
    :param wait_for_completion: wait until every job has finished (in the triggerer).
    :param submit_concurrency: POSTs in flight at once (default 8).
    :param max_in_flight: cap on jobs submitted and not finished, for accounts with a concurrency
        quota: the task submits a wave, defers, and resumes to submit the next when slots free up.
    :param max_failure_rate: share of failed jobs (0 to 1) the task accepts without failing (default 0).
    :param page_size: listing page size to ask for (the server may apply less; default 100).
    :param poll_interval: seconds between poll cycles while waiting (default 30).
    :param timeout: how long to wait in all, seconds or a ``timedelta`` (default 24 hours).
    :param chamelaion_conn_id: the Airflow connection (default ``chamelaion_default``).
    :return: the summary: ``manifest_path``, ``total``, ``submitted``, ``reused`` and the count of items
        ``not_submitted``, ``queued``, ``running``, ``completed`` and ``failed``.
    """

    template_fields: Sequence[str] = ("catalogue", "manifest_path")
    ui_color = "#d5e8f5"

    def __init__(
        self,
        *,
        catalogue: CatalogueSource,
        manifest_path: CataloguePath,
        catalogue_format: str | None = None,
        wait_for_completion: bool = True,
        submit_concurrency: int = 8,
        max_in_flight: int | None = None,
        max_failure_rate: float = 0.0,
        page_size: int = 100,
        poll_interval: float = 30,
        timeout: float | timedelta = timedelta(hours=24),
        chamelaion_conn_id: str = "chamelaion_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.catalogue = catalogue
        self.manifest_path = manifest_path
        self.catalogue_format = catalogue_format
        self.wait_for_completion = wait_for_completion
        self.submit_concurrency = submit_concurrency
        self.max_in_flight = max_in_flight
        self.max_failure_rate = max_failure_rate
        self.page_size = page_size
        self.poll_interval = float(poll_interval)
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        self.chamelaion_conn_id = chamelaion_conn_id
        self._check_arguments()

    def _check_arguments(self) -> None:
        def whole(name: str, value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 1

        for name in ("submit_concurrency", "page_size"):
            if not whole(name, getattr(self, name)):
                raise ChamelaionConfigError(f"{self.task_id}: {name} must be a whole number of at least 1")
        if self.max_in_flight is not None:
            if not whole("max_in_flight", self.max_in_flight):
                raise ChamelaionConfigError(
                    f"{self.task_id}: max_in_flight must be a whole number of at least 1"
                )
            if not self.wait_for_completion:
                raise ChamelaionConfigError(
                    f"{self.task_id}: max_in_flight needs wait_for_completion=True (the next wave is submitted "
                    "when earlier jobs finish)"
                )
        if not 0 <= self.max_failure_rate <= 1:
            raise ChamelaionConfigError(f"{self.task_id}: max_failure_rate must be between 0 and 1")
        if self.poll_interval <= 0 or self.timeout <= 0:
            raise ChamelaionConfigError(f"{self.task_id}: poll_interval and timeout must be positive")

    @cached_property
    def hook(self) -> ChamelaionHook:
        from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

        return ChamelaionHook(self.chamelaion_conn_id)

    # -- submission -------------------------------------------------------------------------------

    def _manifest_location(self) -> str:
        if self.manifest_path is None or not str(self.manifest_path).strip():
            raise ChamelaionConfigError(
                f"{self.task_id}: manifest_path is required: a local or object-storage file path"
            )
        return str(as_path(self.manifest_path))

    def _submit_wave(self, items: Sequence[CatalogueItem], rows: dict[str, ManifestRow]) -> None:
        waiting = [item for item in items if rows[item.reference_id].status == NOT_SUBMITTED]
        if self.max_in_flight is not None:
            in_flight = sum(row.in_flight for row in rows.values())
            waiting = waiting[: max(0, self.max_in_flight - in_flight)]
        if not waiting:
            return
        self.log.info("Submitting %d item(s), %d at a time", len(waiting), self.submit_concurrency)
        submitter = BatchSubmitter(self.hook, concurrency=self.submit_concurrency, log=self.log)
        try:
            submitter.submit(waiting, rows)
        finally:
            if submitter.found_after_lost_answer:
                self.log.warning(
                    "%d submission(s) lost their answer; the job each had created was found and is used",
                    submitter.found_after_lost_answer,
                )

    def execute(self, context: Context) -> dict[str, Any]:
        items = load_catalogue(self.catalogue, self.catalogue_format)  # every item checked, no HTTP yet
        location = self._manifest_location()
        found = reconcile(self.hook, [item.reference_id for item in items], page_size=self.page_size)
        self.log.info(
            "Reconciled %d items in %d API calls (%d listing pages, %d look-ups): %d to reuse, %d to submit",
            len(items),
            found.api_calls,
            found.list_calls,
            found.lookup_calls,
            len(found.found),
            len(items) - len(found.found),
        )
        rows = {
            item.reference_id: (
                ManifestRow.for_request(item.reference_id, found.found[item.reference_id], "reused")
                if item.reference_id in found.found
                else ManifestRow(item.reference_id)
            )
            for item in items
        }
        return self._submit_and_continue(context, items, rows, location, time.time() + self.timeout)

    def _submit_and_continue(
        self,
        context: Context,
        items: Sequence[CatalogueItem],
        rows: dict[str, ManifestRow],
        location: str,
        end_time: float,
    ) -> dict[str, Any]:
        try:
            self._submit_wave(items, rows)
        finally:
            write_manifest(location, rows.values())  # what was submitted is never forgotten
        counts = count_stages(rows.values())
        self.log.info("Manifest written to %s: %s", location, format_counts(counts))
        if not self.wait_for_completion:
            return self._finish(context, list(rows.values()), location, check_failures=False)
        if counts["queued"] + counts["running"] == 0 and counts["not_submitted"] == 0:
            return self._finish(context, list(rows.values()), location)
        from airflow_provider_chamelaion.triggers.batch import LipsyncBatchTrigger

        resume_at = None
        if self.max_in_flight is not None and counts["not_submitted"]:
            # Resume for the next wave once a quarter of the slots (at least one) are free.
            resume_at = self.max_in_flight - max(1, self.max_in_flight // 4)
        self.defer(
            trigger=LipsyncBatchTrigger(
                manifest_path=location,
                chamelaion_conn_id=self.chamelaion_conn_id,
                poll_interval=self.poll_interval,
                end_time=end_time,
                resume_when_in_flight_at_most=resume_at,
                page_size=self.page_size,
            ),
            method_name="execute_complete",
        )
        raise AssertionError("unreachable")  # pragma: no cover  (defer raises)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the batch trigger fired: submit the next wave, or report the batch."""
        from airflow_provider_chamelaion.triggers.batch import BATCH_STATUSES

        if not isinstance(event, dict) or event.get("status") not in BATCH_STATUSES:
            raise ChamelaionError(f"Malformed event from LipsyncBatchTrigger: {event!r}")
        status, location = event["status"], str(event.get("manifest_path") or self._manifest_location())
        if status == "error":
            raise ChamelaionError(str(event.get("message")))
        if status == "timeout":
            raise LipsyncWaitTimeout(f"{event.get('message')}; manifest: {location}")
        rows = {row.reference_id: row for row in read_manifest(location)}
        if status == "wave":
            items = load_catalogue(self.catalogue, self.catalogue_format)
            end_time = float(event.get("end_time") or time.time() + self.timeout)
            return self._submit_and_continue(context, items, rows, location, end_time)
        return self._finish(context, list(rows.values()), location)

    # -- the result -------------------------------------------------------------------------------

    def _finish(
        self, context: Context, rows: list[ManifestRow], location: str, *, check_failures: bool = True
    ) -> dict[str, Any]:
        counts = count_stages(rows)
        summary: dict[str, Any] = {
            "manifest_path": location,
            "total": len(rows),
            "submitted": sum(row.source == "submitted" for row in rows),
            "reused": sum(row.source == "reused" for row in rows),
            **counts,
        }
        context["ti"].xcom_push(key=XCOM_RETURN_KEY, value=summary)
        failed = [row for row in rows if row.stage == "failed"]
        self.log.info("Batch of %d finished: %s", len(rows), format_counts(counts))
        if check_failures and failed:
            named = "; ".join(
                f"{row.reference_id} ({f'request {row.request_id}' if row.request_id else 'rejected'}): "
                f"{row.error_message or row.status}"
                for row in failed[:NAMED_FAILURES]
            )
            more = f"; and {len(failed) - NAMED_FAILURES} more" if len(failed) > NAMED_FAILURES else ""
            if len(failed) > self.max_failure_rate * len(rows):
                raise LipsyncBatchFailedError(
                    f"{len(failed)} of {len(rows)} lip-sync jobs failed (max_failure_rate "
                    f"{self.max_failure_rate:.1%}): {named}{more}. Every row is in the manifest {location}; "
                    "a re-run resubmits only the failed ones"
                )
            self.log.warning("%d job(s) failed, within max_failure_rate: %s%s", len(failed), named, more)
        return summary


class LipsyncBatchDownloadOperator(BaseOperator):
    """Downloads every completed output of a batch manifest, concurrently, streamed and atomically.

    Files are named from ``filename_template`` (``str.format`` over the manifest row, default
    ``{reference_id}.mp4``) inside ``destination``. A file already at an output's name is skipped only
    when it is known to hold that row's job's complete output: the downloads record in
    ``destination/.chamelaion-downloads/`` (see :mod:`~airflow_provider_chamelaion.downloads_record`)
    says the name holds this ``request_id``'s output, and the file still has the size recorded. Anything
    else there (another job's output, a hand copy, an interrupted copy) is downloaded over, so a re-run
    downloads nothing twice and delivers exactly the manifest's jobs. On object storage, what is present
    is learned from one listing of ``destination``, not a look-up per output. An expired output URL is
    refreshed by the hook; an empty (0-byte) output fails its item, and nothing takes its name.

    :param manifest_path: the batch manifest (templated), e.g. the batch task's
        ``output["manifest_path"]``.
    :param destination: local (absolute) or object-storage directory (templated); a store this
        installation cannot use, or a relative path, fails the DAG when it is parsed.
    :param filename_template: file name per row (templated), e.g. ``{reference_id}/dubbed.mp4``.
    :param concurrency: downloads at once (default 4).
    :param chamelaion_conn_id: the Airflow connection (default ``chamelaion_default``).
    :return: ``{"destination", "total", "downloaded", "skipped"}``.
    """

    template_fields: Sequence[str] = ("manifest_path", "destination", "filename_template")
    ui_color = "#d5f5e0"

    def __init__(
        self,
        *,
        manifest_path: CataloguePath | Any,
        destination: CataloguePath,
        filename_template: str = "{reference_id}.mp4",
        concurrency: int = 4,
        chamelaion_conn_id: str = "chamelaion_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.manifest_path = manifest_path
        self.destination = destination
        self.filename_template = filename_template
        self.concurrency = concurrency
        self.chamelaion_conn_id = chamelaion_conn_id
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ChamelaionConfigError(f"{self.task_id}: concurrency must be a whole number of at least 1")
        # At parse time, on the unrendered value: a store this installation cannot write, or a relative
        # path, fails the DAG import, before the batch upstream pays for jobs whose outputs could not be
        # saved. The rendered value is checked again when the task starts.
        check_storage_location(destination, f"{self.task_id}: destination")

    @cached_property
    def hook(self) -> ChamelaionHook:
        from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

        return ChamelaionHook(self.chamelaion_conn_id)

    def _file_name(self, row: ManifestRow) -> str:
        try:
            name = self.filename_template.format(**row.to_dict())
        except (KeyError, IndexError, ValueError) as err:
            raise ChamelaionConfigError(
                f"{self.task_id}: filename_template {self.filename_template!r} cannot be filled from a manifest "
                f"row ({err!r}); use fields such as {{reference_id}} and {{request_id}}"
            ) from None
        parts = name.split("/")
        if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ChamelaionConfigError(
                f"{self.task_id}: filename_template gives {name!r} for {row.reference_id}: it must be a relative "
                "path inside destination"
            )
        if parts[0] == RECORD_FOLDER:
            raise ChamelaionConfigError(
                f"{self.task_id}: filename_template gives {name!r} for {row.reference_id}, inside {RECORD_FOLDER}/, "
                "where the downloads records are kept; use another folder"
            )
        return name

    def _targets(self, location: Any) -> dict[str, ManifestRow]:
        """The manifest's completed rows, by the file name each is written to."""
        rows = [row for row in read_manifest(location) if row.stage == "completed" and row.request_id]
        targets: dict[str, ManifestRow] = {}
        for row in rows:
            name = self._file_name(row)
            if name in targets:
                raise ChamelaionConfigError(
                    f"{self.task_id}: filename_template gives {name!r} for both {targets[name].reference_id} and "
                    f"{row.reference_id}; include {{reference_id}} in it"
                )
            targets[name] = row
        return targets

    def _manifest_location(self) -> Any:
        location = self.manifest_path
        if isinstance(location, dict):  # the batch task's summary, e.g. ``batch.output``
            location = location.get("manifest_path")
        if not location:
            raise ChamelaionConfigError(
                f"{self.task_id}: manifest_path is required: the manifest's path, or the batch task's summary"
            )
        return location

    def execute(self, context: Context) -> dict[str, Any]:
        check_destination(self.destination)  # rendered now: before the manifest is read or anything fetched
        check_storage_location(self.destination, f"{self.task_id}: destination")
        targets = self._targets(self._manifest_location())
        directory = as_path(self.destination)
        # One listing (object storage) or a stat per name (local) tells what is there, records included.
        sizes = file_sizes(directory, targets, folder=RECORD_FOLDER)
        records = read_records(directory, sizes, self.log)
        known = newest_entries(records.values())
        todo = [
            (name, row)
            for name, row in targets.items()
            if not holds_output(known, sizes, name, str(row.request_id))
        ]
        self.log.info(
            "%d completed outputs in the manifest: %d already in %s, %d to download (%d of them over a file "
            "not known to hold that job's complete output)",
            len(targets),
            len(targets) - len(todo),
            directory,
            len(todo),
            sum(name in sizes for name, _ in todo),
        )
        ti = context["ti"]
        own = record_name(ti.dag_id, ti.task_id, getattr(ti, "map_index", -1))
        record = DownloadsRecord(
            directory / own,
            records.get(own, ()),
            flush_every=max(FLUSH_EVERY_AT_LEAST, len(todo) // 10),
        )
        errors = self._download_all(directory, todo, record)
        if errors:
            named = "; ".join(f"{row.reference_id}: {err}" for row, err in errors[:NAMED_FAILURES])
            raise ChamelaionError(
                f"{len(errors)} of {len(todo)} downloads failed ({named}); a re-run downloads only the missing ones"
            )
        return {
            "destination": str(directory),
            "total": len(targets),
            "downloaded": len(todo),
            "skipped": len(targets) - len(todo),
        }

    def _download_all(
        self,
        directory: Path | ObjectStoragePath,
        todo: list[tuple[str, ManifestRow]],
        record: DownloadsRecord,
    ) -> list[tuple[ManifestRow, BaseException]]:
        """Download ``todo`` concurrently, recording each output delivered; return the failures."""
        hooks = ThreadHooks(self.hook)
        errors: list[tuple[ManifestRow, BaseException]] = []
        step = max(1, len(todo) // 10)

        def download(name: str, row: ManifestRow) -> int:
            request = LipsyncRequest(
                id=str(row.request_id),
                status=row.status,
                output_url=row.output_url,
                reference_id=row.reference_id,
            )
            return hooks.get().save_output(request, directory / name, as_file=True).size

        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="chamelaion-download")
        futures = {pool.submit(download, name, row): (name, row) for name, row in todo}
        noted: set[Future[int]] = set()
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                noted.add(future)
                name, row = futures[future]
                try:
                    size = future.result()
                except Exception as err:
                    errors.append((row, err))
                else:
                    self._note_delivered(record, name, row, size)
                if done % step == 0 or done == len(todo):
                    self.log.info(
                        "Downloaded %d of %d (%d failed)", done - len(errors), len(todo), len(errors)
                    )
        finally:
            # Stopped (a timeout, a kill, an error of ours): start no queued download, and record the
            # ones that finished meanwhile before the record is written.
            pool.shutdown(wait=False, cancel_futures=True)
            for future in set(futures) - noted:
                if future.done() and not future.cancelled() and future.exception() is None:
                    self._note_delivered(record, *futures[future], future.result())
            hooks.close()
            self._write_record(record)
        return errors

    def _note_delivered(self, record: DownloadsRecord, name: str, row: ManifestRow, size: int) -> None:
        try:
            record.add(name, str(row.request_id), size)
        except Exception as err:  # the output is delivered; only writing down that it is failed
            self.log.warning(
                "Could not write the downloads record %s (%s); trying again later", record.path, err
            )

    def _write_record(self, record: DownloadsRecord) -> None:
        # Also when the task fails or is stopped: what was delivered stays known, so a retry skips it.
        try:
            record.flush()
        except Exception as err:
            self.log.warning(
                "Could not write the downloads record %s (%s); a re-run downloads the outputs it lacks again",
                record.path,
                err,
            )
