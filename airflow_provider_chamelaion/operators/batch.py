"""Batch operators for catalogue backfills: submit and wait on thousands of jobs in one task, download them.

Why not one mapped task per item: Airflow's per-task overhead (scheduling, a worker slot, a trigger row,
XCom rows, logs) dominates a job API that only needs a POST and a few polls, and ``[core]
max_map_length`` (1,024 by default) caps a mapped task. One batch task reconciles the whole catalogue
with a few listing pages, submits what is missing concurrently, and waits in one trigger.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from airflow_provider_chamelaion.batch.catalogue import (
    CatalogueItem,
    CatalogueSource,
    load_catalogue,
)
from airflow_provider_chamelaion.batch.download import BatchDownload
from airflow_provider_chamelaion.batch.listing import JobLookup, find_jobs
from airflow_provider_chamelaion.batch.manifest import (
    NOT_SUBMITTED,
    Manifest,
    ManifestOwner,
    ManifestRow,
    count_stages,
    format_counts,
    load_manifest,
    save_manifest,
)
from airflow_provider_chamelaion.batch.submit import BatchSubmitter, SubmitReport
from airflow_provider_chamelaion.client.media import (
    StorageLocation,
    check_destination,
    check_storage_location,
    storage_path,
)
from airflow_provider_chamelaion.exceptions import (
    ChamelaionConfigError,
    ChamelaionError,
    LipsyncBatchFailedError,
    LipsyncBatchStopped,
    LipsyncWaitTimeout,
)
from airflow_provider_chamelaion.operators.common import (
    DEFAULT_CONN_ID,
    ChamelaionHookMixin,
    check_hook_params,
    check_positive,
    check_whole,
    seconds,
)
from airflow_provider_chamelaion.operators.lipsync import XCOM_RETURN_KEY
from airflow_provider_chamelaion.utils.job_identity import digest
from airflow_provider_chamelaion.utils.waiting import is_stale
from airflow_provider_chamelaion.version_compat import BaseOperator

if TYPE_CHECKING:
    from airflow_provider_chamelaion.version_compat import Context

#: How many failed items a batch failure names.
NAMED_FAILURES = 5


def catalogue_digest(items: Sequence[CatalogueItem]) -> str:
    """What identifies a catalogue's content: every item's ``reference_id`` and inputs, in order."""
    return digest([item.to_dict() for item in items])


def with_map_index(location: str, map_index: int) -> str:
    """``.../manifest.jsonl`` as ``.../manifest.map-3.jsonl``: one manifest per mapped task instance."""
    head, _, name = location.rpartition("/")
    stem, dot, suffix = name.rpartition(".")
    named = f"{stem}.map-{map_index}.{suffix}" if dot and stem else f"{name}.map-{map_index}"
    return f"{head}/{named}" if head or location.startswith("/") else named


class LipsyncBatchGenerateOperator(ChamelaionHookMixin, BaseOperator):
    """Submits a whole catalogue of lip-sync jobs, paying once per item, and waits for them.

    The catalogue is validated whole before any HTTP call. The **manifest** at ``manifest_path`` is this
    task instance's record of the batch (its first line names the task instance and its catalogue): a
    retry, or a clear of the task, starts from it (completed rows cost nothing, rows with a live job keep
    it, failed ones are submitted again), and a manifest another task instance wrote is refused before
    any request. In a mapped task the map index is added to the file name unless ``manifest_path``
    already mentions ``map_index``.

    Before paying for anything, the items without a job of theirs are looked up with a few listing pages
    (the newest job with the ``reference_id`` that has not failed is reused), the plan is logged and
    written to the manifest, and ``max_new_jobs`` is checked. Then the rest is submitted, at the
    account's pace (``submit_rate``, or learned from 429s) and ``submit_concurrency`` at a time, reading
    the newest listing page before each chunk so a job someone else creates meanwhile for one of the items
    is used rather than paid for again; and the whole batch waits in one trigger
    (:class:`~airflow_provider_chamelaion.triggers.batch.LipsyncBatchTrigger`).

    The manifest's rows: ``reference_id``, ``request_id``, ``status``, ``output_url``,
    ``error_message``, ``source`` (``submitted`` by this task instance, or ``reused``), the item's inputs
    and ``duplicates``. XCom gets a small summary (counts, the manifest's path and owner). When jobs fail,
    the task fails once all have finished, naming how many and the first few with the API's messages,
    unless their share is within ``max_failure_rate``.

    :param catalogue: a list of items (templated; e.g. an upstream task's output), or a local or
        object-storage path of a JSON Lines or CSV catalogue (templated). Items have ``video_url``,
        ``audio_url``, ``reference_id`` and optionally ``disable_active_speaker_detection``.
    :param manifest_path: where to write the manifest (templated): an absolute local path or an
        object-storage URI that the workers and the triggerer all reach, unique per task instance, e.g.
        ``s3://bucket/backfills/{{ run_id }}/manifest.jsonl``.
    :param catalogue_format: ``jsonl`` or ``csv``; default: from the file name.
    :param wait_for_completion: wait until every job has finished (in the triggerer).
    :param submit_concurrency: POSTs in flight at once, and POSTs between two looks at the listing
        (default 8).
    :param submit_rate: POSTs per second the account allows; default ``None``: learned from the API's
        429 answers (the submitters then keep just under the rate the API accepted).
    :param max_in_flight: cap on jobs submitted and not finished, for accounts with a concurrency
        quota: the task submits a wave, defers, and resumes to submit the next when slots free up.
    :param max_new_jobs: the most jobs one try may plan to pay for; a plan above it fails before any
        POST, naming the counts (default ``None``: no limit).
    :param plan_only: a dry run: look up what exists, write the plan as the manifest and the summary,
        submit nothing (``dry_run`` is the name of an Airflow operator method already).
    :param download_to: also download every completed output into this local (absolute) or
        object-storage directory (templated), in the task that resumes from the wait, as
        :class:`LipsyncBatchDownloadOperator` would: one task fewer to start. Default: no download.
    :param filename_template: with ``download_to``, the file name per row (templated; default
        ``{reference_id}.mp4``).
    :param download_concurrency: with ``download_to``, downloads at once (default 8).
    :param max_failure_rate: share of failed jobs (0 to 1) the task accepts without failing (default 0).
    :param page_size: listing page size to ask for (the server may apply less; default 100).
    :param poll_interval: seconds between poll cycles while waiting (default 30).
    :param timeout: how long to wait in all, seconds or a ``timedelta`` (default 24 hours).
    :param chamelaion_conn_id: the Airflow connection (default ``chamelaion_default``).
    :param hook_params: hook arguments (``max_attempts``, ``timeout``, ``download_timeout``).
    :return: the summary: ``manifest_path``, ``owner``, ``total``, ``submitted``, ``reused``,
        ``duplicates`` and the count of items ``not_submitted``, ``queued``, ``running``, ``completed``
        and ``failed`` (``plan_only`` adds ``plan``).
    """

    template_fields: Sequence[str] = ("catalogue", "manifest_path", "download_to", "filename_template")
    ui_color = "#d5e8f5"

    def __init__(
        self,
        *,
        catalogue: CatalogueSource,
        manifest_path: StorageLocation,
        catalogue_format: str | None = None,
        wait_for_completion: bool = True,
        submit_concurrency: int = 8,
        submit_rate: float | None = None,
        max_in_flight: int | None = None,
        max_new_jobs: int | None = None,
        plan_only: bool = False,
        download_to: StorageLocation | None = None,
        filename_template: str = "{reference_id}.mp4",
        download_concurrency: int = 8,
        max_failure_rate: float = 0.0,
        page_size: int = 100,
        poll_interval: float = 30,
        timeout: float | timedelta = timedelta(hours=24),
        chamelaion_conn_id: str = DEFAULT_CONN_ID,
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hook_params = check_hook_params(self.task_id, hook_params)
        self.catalogue = catalogue
        self.manifest_path = manifest_path
        # As written in the DAG (before rendering): does it already give each map index its own file?
        self.manifest_path_per_map_index = "map_index" in str(manifest_path)
        self.catalogue_format = catalogue_format
        self.wait_for_completion = wait_for_completion
        self.submit_concurrency = submit_concurrency
        self.submit_rate = submit_rate
        self.max_in_flight = max_in_flight
        self.max_new_jobs = max_new_jobs
        self.plan_only = plan_only
        self.download_to = download_to
        self.filename_template = filename_template
        self.download_concurrency = download_concurrency
        self.max_failure_rate = max_failure_rate
        self.page_size = page_size
        self.poll_interval = float(poll_interval)
        self.timeout = seconds(timeout)
        self.chamelaion_conn_id = chamelaion_conn_id
        self._submitter: BatchSubmitter | None = None
        #: What this try's last submission did (POSTs, jobs adopted, items paid twice, listing calls).
        self.submit_report: SubmitReport | None = None
        self._check_arguments()

    def _check_arguments(self) -> None:
        check_whole(
            self.task_id,
            submit_concurrency=self.submit_concurrency,
            page_size=self.page_size,
            max_in_flight=self.max_in_flight,
        )
        check_whole(self.task_id, minimum=0, max_new_jobs=self.max_new_jobs)
        check_whole(self.task_id, download_concurrency=self.download_concurrency)
        if self.download_to is not None:
            if not self.wait_for_completion:
                raise ChamelaionConfigError(
                    f"{self.task_id}: download_to needs wait_for_completion=True (outputs exist once jobs finish)"
                )
            check_storage_location(self.download_to, f"{self.task_id}: download_to")
        if self.submit_rate is not None and (
            isinstance(self.submit_rate, bool)
            or not isinstance(self.submit_rate, (int, float))
            or self.submit_rate <= 0
        ):
            raise ChamelaionConfigError(
                f"{self.task_id}: submit_rate must be a positive number of POSTs per second, or None to learn it"
            )
        if self.max_in_flight is not None and not self.wait_for_completion:
            raise ChamelaionConfigError(
                f"{self.task_id}: max_in_flight needs wait_for_completion=True (the next wave is submitted "
                "when earlier jobs finish)"
            )
        if not 0 <= self.max_failure_rate <= 1:
            raise ChamelaionConfigError(f"{self.task_id}: max_failure_rate must be between 0 and 1")
        check_positive(self.task_id, poll_interval=self.poll_interval, timeout=self.timeout)
        # At parse time: a store this installation cannot use, or a relative path, must not get as far
        # as a run that pays for jobs and then cannot record them.
        check_storage_location(self.manifest_path, f"{self.task_id}: manifest_path")

    def on_kill(self) -> None:
        """Stop submitting: no POST not yet sent is sent; every job created is recorded in the manifest."""
        if self._submitter is not None:
            self._submitter.stop.set()

    # -- the manifest -----------------------------------------------------------------------------

    def _manifest_location(self, owner: ManifestOwner) -> str:
        if self.manifest_path is None or not str(self.manifest_path).strip():
            raise ChamelaionConfigError(
                f"{self.task_id}: manifest_path is required: a local or object-storage file path"
            )
        check_storage_location(self.manifest_path, f"{self.task_id}: manifest_path")
        location = str(storage_path(self.manifest_path))
        if owner.map_index >= 0 and not self.manifest_path_per_map_index:
            location = with_map_index(location, owner.map_index)
        return location

    def _rows_for(
        self, items: Sequence[CatalogueItem], earlier: Manifest | None
    ) -> tuple[list[ManifestRow], set[str]]:
        """This try's rows: the earlier tries' where the item is unchanged; and job ids never to reuse."""
        if earlier is None:
            return [ManifestRow.for_item(item) for item in items], set()
        old = {row.reference_id: row for row in earlier.rows}
        rows: list[ManifestRow] = []
        superseded: set[str] = set()
        added = changed = failed = 0
        for item in items:
            row = old.pop(item.reference_id, None)
            if row is not None and row.same_inputs(item) and not row.needs_job:
                rows.append(row)  # a live or finished job of this task instance's: kept, never replaced
                continue
            if row is None:
                added += 1
            elif not row.same_inputs(item):
                changed += 1
                superseded.add(row.request_id or "")
            elif row.stage == "failed":
                failed += 1
            fresh = ManifestRow.for_item(item)
            fresh.duplicates = list(row.duplicates) if row is not None and row.same_inputs(item) else []
            rows.append(fresh)
        if failed:
            self.log.info("%d item(s) whose job failed in an earlier try will be submitted again", failed)
        if added or changed or old:
            self.log.warning(
                "The catalogue changed since this task instance's manifest was written: %d new item(s), %d "
                "with changed inputs (submitted anew: their earlier jobs are not reused), %d removed (their "
                "jobs are no longer waited on)",
                added,
                changed,
                len(old),
            )
        superseded.discard("")
        return rows, superseded

    # -- submission -------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        return self._start(context)

    def _start(self, context: Context) -> dict[str, Any]:
        """A try's start: validate, then continue this task instance's manifest (or begin one)."""
        items = load_catalogue(self.catalogue, self.catalogue_format)  # every item checked, no HTTP yet
        owner = ManifestOwner.of(context["ti"])
        location = self._manifest_location(owner)
        earlier = load_manifest(location, missing_ok=True)
        if earlier is not None:
            earlier.check_owner(owner, location)
            self.log.info("Continuing this task instance's manifest %s", location)
        rows, superseded = self._rows_for(items, earlier)
        manifest = Manifest(owner, catalogue_digest(items), rows)
        return self._continue(
            context, manifest, location, time.time() + self.timeout, whole_plan=True, ignore=superseded
        )

    def _look_up(self, rows: Sequence[ManifestRow], ignore: set[str]) -> JobLookup:
        found = find_jobs(
            self.hook, [row.reference_id for row in rows], page_size=self.page_size, ignore=ignore
        )
        self.log.info(
            "Looked up %d item(s) without a job in %d API calls (%d listing pages, %d look-ups): %d to reuse",
            len(rows),
            found.api_calls,
            found.list_calls,
            found.lookup_calls,
            len(found.found),
        )
        by_reference = {row.reference_id: row for row in rows}
        for reference, request in found.found.items():
            by_reference[reference].use(request, "reused")
        return found

    def _check_budget(self, to_post: Sequence[ManifestRow], reused: int, location: str) -> None:
        if self.max_new_jobs is None or len(to_post) <= self.max_new_jobs:
            return
        raise ChamelaionConfigError(
            f"{self.task_id}: this batch would pay for {len(to_post)} new job(s), more than max_new_jobs="
            f"{self.max_new_jobs} ({reused} existing job(s) reused). Nothing was submitted; the plan is in "
            f"the manifest {location}. If that many is expected, raise max_new_jobs; otherwise check the "
            "catalogue and its reference_id scheme (a changed scheme finds none of the jobs already paid for)"
        )

    def _continue(
        self,
        context: Context,
        manifest: Manifest,
        location: str,
        end_time: float,
        *,
        whole_plan: bool,
        ignore: set[str] | None = None,
    ) -> dict[str, Any]:
        """Look up, then submit what this try (or wave) must pay for; then wait, or report."""
        rows = manifest.rows
        try:
            waiting = [row for row in rows if row.status == NOT_SUBMITTED]
            slots = None
            if self.max_in_flight is not None:
                slots = max(0, self.max_in_flight - sum(row.in_flight for row in rows))
            # Before paying, the API is asked first: for the whole plan at a try's start (a killed try
            # may have paid for items its manifest does not show yet), for the wave on a resume.
            check = waiting if whole_plan or slots is None else waiting[:slots]
            found = self._look_up(check, ignore or set()) if check else None
            to_post = [row for row in check if row.status == NOT_SUBMITTED]
            if whole_plan and found is not None:
                self.log.info(
                    "Plan: %d job(s) to pay for, %d existing job(s) reused, %d item(s) already had a job "
                    "of this task instance's",
                    len(to_post),
                    len(found.found),
                    len(rows) - len(check),
                )
            save_manifest(location, manifest)  # the plan, before the first POST
            self._check_budget(to_post, len(found.found) if found else 0, location)
            if self.plan_only:
                plan = {"submit": len(to_post), "reuse": len(found.found) if found else 0}
                return self._finish(context, manifest, location, check_failures=False, plan=plan)
            if slots is not None:
                slots = max(0, slots - sum(row.in_flight for row in check))
                to_post = to_post[:slots]
            if to_post and found is not None:
                self._submit(to_post, rows, found)
        finally:
            save_manifest(location, manifest)  # what was submitted is never forgotten
        counts = count_stages(rows)
        self.log.info("Manifest written to %s: %s", location, format_counts(counts))
        if not self.wait_for_completion:
            return self._finish(context, manifest, location, check_failures=False)
        in_flight = counts["queued"] + counts["running"]
        if in_flight == 0 and counts["not_submitted"] == 0:
            return self._finish(context, manifest, location)
        if in_flight == 0:
            raise ChamelaionError(
                f"{counts['not_submitted']} item(s) could not be submitted and nothing is in flight; the "
                f"manifest {location} has every row, a retry submits the rest"
            )
        if time.time() >= end_time:
            raise LipsyncWaitTimeout(f"The batch did not finish by its deadline; manifest: {location}")
        self._defer(context, manifest, location, end_time, counts)
        raise AssertionError("unreachable")  # pragma: no cover  (defer raises)

    def _submit(self, to_post: list[ManifestRow], rows: list[ManifestRow], found: JobLookup) -> None:
        self.log.info(
            "Submitting %d item(s), %d at a time, %s",
            len(to_post),
            self.submit_concurrency,
            f"{self.submit_rate:g} a second" if self.submit_rate else "at the pace the API accepts",
        )
        every_row = {row.reference_id: row for row in rows}
        positions = {row.reference_id: index for index, row in enumerate(rows)}
        submitter = self._submitter = BatchSubmitter(
            self.hook,
            concurrency=self.submit_concurrency,
            rate=self.submit_rate,
            log=self.log,
            page_size=self.page_size,
        )
        try:
            report = submitter.submit(
                to_post,
                every_row,
                positions,
                watermark=(found.newest_id, found.total),
                watch_first=found.in_flight > 0,
            )
        except LipsyncBatchStopped:
            self.log.warning("Submission stopped; every job created is in the manifest")
            raise
        finally:
            self._submitter = None
            self.submit_report = submitter.report
            if submitter.report.found_after_lost_answer:
                self.log.warning(
                    "%d submission(s) lost their answer; the job each had created was found and is used",
                    submitter.report.found_after_lost_answer,
                )
        self.log.info(
            "Submitted %d job(s); %d item(s) got a job another submitter created meanwhile; %d paid twice; "
            "%d listing call(s) to watch for other submitters",
            report.posted,
            report.adopted,
            len(report.duplicates),
            report.listing_calls,
        )

    def _defer(
        self, context: Context, manifest: Manifest, location: str, end_time: float, counts: dict[str, int]
    ) -> None:
        from airflow_provider_chamelaion.triggers.batch import LipsyncBatchTrigger

        resume_at = None
        if self.max_in_flight is not None and counts["not_submitted"]:
            # Resume for the next wave once a quarter of the slots (at least one) are free.
            resume_at = self.max_in_flight - max(1, self.max_in_flight // 4)
        owner = manifest.owner
        self.defer(
            trigger=LipsyncBatchTrigger(
                manifest_path=location,
                chamelaion_conn_id=self.chamelaion_conn_id,
                poll_interval=self.poll_interval,
                end_time=end_time,
                resume_when_in_flight_at_most=resume_at,
                page_size=self.page_size,
                owner=None if owner is None else owner.to_dict(),
                try_number=getattr(context["ti"], "try_number", None),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the batch trigger fired: submit the next wave, or report the batch."""
        from airflow_provider_chamelaion.triggers.batch import BATCH_STATUSES

        if not isinstance(event, dict) or event.get("status") not in BATCH_STATUSES:
            raise ChamelaionError(f"Malformed event from LipsyncBatchTrigger: {event!r}")
        ti = context["ti"]
        if is_stale(event, context):
            # Airflow 3.0 starts a retry here, with the failed try's event: start over from the manifest.
            self.log.warning("This try was handed an earlier try's event; starting over from its manifest")
            return self._start(context)
        status = event["status"]
        owner = ManifestOwner.of(ti)
        location = str(event.get("manifest_path") or self._manifest_location(owner))
        if status == "error":
            raise ChamelaionError(str(event.get("message")))
        if status == "timeout":
            raise LipsyncWaitTimeout(f"{event.get('message')}; manifest: {location}")
        manifest = load_manifest(location)
        assert manifest is not None
        manifest.check_owner(owner, location)
        if status == "wave":
            end_time = float(event.get("end_time") or time.time() + self.timeout)
            if time.time() >= end_time:
                raise LipsyncWaitTimeout(f"The batch did not finish by its deadline; manifest: {location}")
            return self._continue(context, manifest, location, end_time, whole_plan=False)
        return self._finish(context, manifest, location)

    # -- the result -------------------------------------------------------------------------------

    def _finish(
        self,
        context: Context,
        manifest: Manifest,
        location: str,
        *,
        check_failures: bool = True,
        plan: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        rows = manifest.rows
        counts = count_stages(rows)
        summary: dict[str, Any] = {
            "manifest_path": location,
            "owner": None if manifest.owner is None else manifest.owner.to_dict(),
            "total": len(rows),
            "submitted": sum(row.source == "submitted" for row in rows),
            "reused": sum(row.source == "reused" for row in rows),
            "duplicates": sum(len(row.duplicates) for row in rows),
            **counts,
        }
        if self.download_to is not None and check_failures:
            summary["downloads"] = BatchDownload(
                self.hook,
                self.download_to,
                filename_template=self.filename_template,
                concurrency=self.download_concurrency,
                record=BatchDownload.record_of(context["ti"]),
                log=self.log,
                field=f"{self.task_id}: filename_template",
            ).run(rows)
        if plan is not None:
            summary["plan"] = plan
            self.log.info(
                "Dry run: %d job(s) would be paid for, %d reused; nothing was submitted", *plan.values()
            )
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
            # Exact at the boundary: 0.29 of 100 accepts 29 (in floating point 0.29 * 100 < 29).
            if Fraction(len(failed), len(rows)) > Fraction(str(self.max_failure_rate)):
                raise LipsyncBatchFailedError(
                    f"{len(failed)} of {len(rows)} lip-sync jobs failed (max_failure_rate "
                    f"{self.max_failure_rate:.1%}): {named}{more}. Every row is in the manifest {location}; "
                    "a retry or a clear of this task resubmits only the failed ones"
                )
            self.log.warning("%d job(s) failed, within max_failure_rate: %s%s", len(failed), named, more)
        return summary


class LipsyncBatchDownloadOperator(ChamelaionHookMixin, BaseOperator):
    """Downloads every completed output of a batch manifest, concurrently, streamed and atomically.

    Files are named from ``filename_template`` (``str.format`` over the manifest row, default
    ``{reference_id}.mp4``) inside ``destination``. A file already at an output's name is skipped only
    when it is known to hold that row's job's complete output: the downloads record in
    ``destination/.chamelaion-downloads/`` (see :mod:`~airflow_provider_chamelaion.batch.record`)
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
    :param hook_params: hook arguments (``max_attempts``, ``timeout``, ``download_timeout``).
    :return: ``{"destination", "total", "downloaded", "skipped"}``.
    """

    template_fields: Sequence[str] = ("manifest_path", "destination", "filename_template")
    ui_color = "#d5f5e0"

    def __init__(
        self,
        *,
        manifest_path: StorageLocation | Any,
        destination: StorageLocation,
        filename_template: str = "{reference_id}.mp4",
        concurrency: int = 4,
        chamelaion_conn_id: str = DEFAULT_CONN_ID,
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hook_params = check_hook_params(self.task_id, hook_params)
        self.manifest_path = manifest_path
        self.destination = destination
        self.filename_template = filename_template
        self.concurrency = concurrency
        self.chamelaion_conn_id = chamelaion_conn_id
        check_whole(self.task_id, concurrency=concurrency)
        # At parse time, on the unrendered value: a store this installation cannot write, or a relative
        # path, fails the DAG import, before the batch upstream pays for jobs whose outputs could not be
        # saved. The rendered value is checked again when the task starts.
        check_storage_location(destination, f"{self.task_id}: destination")

    def _rows(self, location: Any) -> list[ManifestRow]:
        manifest = load_manifest(location)
        assert manifest is not None
        owner = self.manifest_path.get("owner") if isinstance(self.manifest_path, dict) else None
        if owner:
            # Handed the batch task's summary: the manifest at its path must still be that task's.
            manifest.check_owner(ManifestOwner.from_dict(owner), str(location))
        return manifest.rows

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
        rows = self._rows(self._manifest_location())
        return BatchDownload(
            self.hook,
            self.destination,
            filename_template=self.filename_template,
            concurrency=self.concurrency,
            record=BatchDownload.record_of(context["ti"]),
            log=self.log,
            field=f"{self.task_id}: filename_template",
        ).run(rows)


__all__ = ["LipsyncBatchDownloadOperator", "LipsyncBatchGenerateOperator"]
