"""Downloading a batch's completed outputs into one destination: concurrently, streamed, each written whole,
and only what is not known to be there already (the downloads record, :mod:`.downloads`).

Used by :class:`~airflow_provider_chamelaion.operators.batch.LipsyncBatchDownloadOperator`, and by the batch
generate operator itself when it is given ``download_to`` (the downloads then run in the task that resumes
from the wait, with no second task to start).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

from airflow_provider_chamelaion.batch.manifest import ManifestRow
from airflow_provider_chamelaion.batch.record import (
    FLUSH_EVERY_AT_LEAST,
    RECORD_FOLDER,
    DownloadsRecord,
    holds_output,
    newest_entries,
    read_records,
    record_name,
)
from airflow_provider_chamelaion.batch.submit import ThreadHooks
from airflow_provider_chamelaion.client.media import StorageLocation, file_sizes, storage_path
from airflow_provider_chamelaion.client.models import LipsyncRequest
from airflow_provider_chamelaion.exceptions import ChamelaionConfigError, ChamelaionError

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
    from airflow_provider_chamelaion.version_compat import ObjectStoragePath

#: How many failed items a failure names.
NAMED_FAILURES = 5


def file_name(template: str, row: ManifestRow, field: str) -> str:
    """``template`` filled from ``row``: a relative path inside the destination, or a clear error."""
    try:
        name = template.format(**row.to_dict())
    except (KeyError, IndexError, ValueError) as err:
        raise ChamelaionConfigError(
            f"{field} {template!r} cannot be filled from a manifest row ({err!r}); use fields such as "
            "{reference_id} and {request_id}"
        ) from None
    parts = name.split("/")
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ChamelaionConfigError(
            f"{field} gives {name!r} for {row.reference_id}: it must be a relative path inside destination"
        )
    if parts[0] == RECORD_FOLDER:
        raise ChamelaionConfigError(
            f"{field} gives {name!r} for {row.reference_id}, inside {RECORD_FOLDER}/, where the downloads "
            "records are kept; use another folder"
        )
    return name


class BatchDownload:
    """Downloads the completed rows of a manifest into ``destination``.

    :param hook: the task's hook (its connection is read on the task's thread).
    :param destination: a local (absolute) or object-storage directory.
    :param filename_template: file name per row (``str.format`` over the row).
    :param concurrency: downloads at once.
    :param record: the name of this task's downloads record (:func:`.record.record_name`).
    :param field: how messages name the template (e.g. ``"download: filename_template"``).
    """

    def __init__(
        self,
        hook: ChamelaionHook,
        destination: StorageLocation,
        *,
        filename_template: str,
        concurrency: int,
        record: str,
        log: Any,
        field: str = "filename_template",
    ) -> None:
        self.hook = hook
        self.directory = storage_path(destination)
        self.filename_template = filename_template
        self.concurrency = concurrency
        self.record_name = record
        self.log = log
        self.field = field

    @staticmethod
    def record_of(ti: Any) -> str:
        """The downloads record a task instance writes (one per task and map index, not per run)."""
        return record_name(ti.dag_id, ti.task_id, getattr(ti, "map_index", -1))

    def targets(self, rows: Sequence[ManifestRow]) -> dict[str, ManifestRow]:
        """The completed rows, by the file name each is written to (two rows on one name: an error)."""
        targets: dict[str, ManifestRow] = {}
        for row in rows:
            if row.stage != "completed" or not row.request_id:
                continue
            name = file_name(self.filename_template, row, self.field)
            if name in targets:
                raise ChamelaionConfigError(
                    f"{self.field} gives {name!r} for both {targets[name].reference_id} and "
                    f"{row.reference_id}; include {{reference_id}} in it"
                )
            targets[name] = row
        return targets

    def run(self, rows: Sequence[ManifestRow]) -> dict[str, Any]:
        """Download what is missing; raise after all if any failed. Returns ``{"destination", "total",
        "downloaded", "skipped"}``."""
        targets = self.targets(rows)
        # One listing (object storage) or a stat per name (local) tells what is there, records included.
        sizes = file_sizes(self.directory, targets, folder=RECORD_FOLDER)
        records = read_records(self.directory, sizes, self.log)
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
            self.directory,
            len(todo),
            sum(name in sizes for name, _ in todo),
        )
        record = DownloadsRecord(
            self.directory / self.record_name,
            records.get(self.record_name, ()),
            flush_every=max(FLUSH_EVERY_AT_LEAST, len(todo) // 10),
        )
        errors = self._download_all(todo, record)
        if errors:
            named = "; ".join(f"{row.reference_id}: {err}" for row, err in errors[:NAMED_FAILURES])
            raise ChamelaionError(
                f"{len(errors)} of {len(todo)} downloads failed ({named}); a re-run downloads only the missing ones"
            )
        return {
            "destination": str(self.directory),
            "total": len(targets),
            "downloaded": len(todo),
            "skipped": len(targets) - len(todo),
        }

    def _download_all(
        self, todo: list[tuple[str, ManifestRow]], record: DownloadsRecord
    ) -> list[tuple[ManifestRow, BaseException]]:
        """Download ``todo`` concurrently, recording each output delivered; return the failures."""
        hooks = ThreadHooks(self.hook)
        errors: list[tuple[ManifestRow, BaseException]] = []
        step = max(1, len(todo) // 10)
        directory: Path | ObjectStoragePath = self.directory

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


__all__ = ["BatchDownload", "file_name"]
