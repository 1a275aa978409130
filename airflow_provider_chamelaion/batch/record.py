"""The downloads record: which file at a batch download's destination holds which job's complete output.

A batch download skips an output's name only when it *knows* the file there is this job's complete
output: a record says the name holds this ``request_id``'s output of N bytes, and the file is still N
bytes. Anything else at the name (a previous run's output of another job, a file copied there by hand,
a copy interrupted outside the provider) is downloaded over, whatever its size.

Why a record file, and not a sidecar per output or object metadata: the batch download must stay
cheap on object storage, where it learns what is present from one listing and writes each output with
one put. A sidecar per output is one more put per output; object metadata (``x-amz-meta-...``) is not
in a listing, so reading it is a HEAD per output, and local files have none. A record is one small
JSON Lines file per writer, in the hidden folder :data:`RECORD_FOLDER` of the destination: the
destination's listing already names it, reading it is one GET, and it is rewritten (atomically, one
put) after every :data:`FLUSH_EVERY_AT_LEAST` downloads or :data:`FLUSH_SECONDS` (whichever comes
first) and when the task ends, so a killed task loses little: what it downloaded since its last
write is downloaded again, nothing more.

One record per task (dag, task and map index; not per run, so a daily DAG does not add a file a day):
mapped tasks writing into one destination at the same time each write their own, and every record
there is read when deciding. When two records name the same file, the newest entry decides (the
task that wrote the file last wrote its entry last). A record is advisory: one that cannot be read
means its outputs are downloaded again, never that a wrong file is kept.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_chamelaion.client.media import atomic_write, read_bytes

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_chamelaion.version_compat import ObjectStoragePath

#: The hidden folder of a destination that holds its downloads records.
RECORD_FOLDER = ".chamelaion-downloads"
RECORD_SUFFIX = ".jsonl"
#: A record is rewritten after this many new downloads at least (more for big batches: a tenth of them),
#: so a 10,000-output batch costs about ten record puts, not one per output.
FLUSH_EVERY_AT_LEAST = 100
#: ... and after this many seconds with downloads not yet recorded, so a kill loses at most this much.
FLUSH_SECONDS = 30.0


@dataclass(frozen=True)
class Delivered:
    """``name`` (relative to the destination) held ``request_id``'s complete output of ``size`` bytes when
    the entry was written, at ``written_at`` (Unix time)."""

    name: str
    request_id: str
    size: int
    written_at: float

    @classmethod
    def from_json(cls, line: str) -> Delivered | None:
        """The entry on one line of a record; ``None`` for a line that is not one (it is ignored)."""
        try:
            value = json.loads(line)
            entry = cls(
                str(value["name"]), str(value["request_id"]), int(value["size"]), float(value["written_at"])
            )
        except (ValueError, TypeError, KeyError):
            return None
        return entry if entry.size > 0 else None


def record_name(dag_id: str, task_id: str, map_index: int | None) -> str:
    """This task's record, relative to the destination: one per task and map index, the same every run.

    :param dag_id: the task instance's DAG.
    :param task_id: the task instance's task.
    :param map_index: its map index (``-1`` or ``None`` when not mapped).
    """
    index = -1 if map_index is None else int(map_index)
    key = hashlib.sha256(json.dumps([dag_id, task_id, index]).encode()).hexdigest()[:24]
    return f"{RECORD_FOLDER}/{key}{RECORD_SUFFIX}"


def is_record(name: str) -> bool:
    """Whether ``name`` (relative to the destination) is a downloads record."""
    return name.startswith(RECORD_FOLDER + "/") and name.endswith(RECORD_SUFFIX)


def parse_record(content: bytes) -> list[Delivered]:
    """The entries of a record file's ``content``; lines that are not entries are left out.

    :param content: the record file's bytes, as read.
    """
    entries = (Delivered.from_json(line) for line in content.decode("utf-8", errors="replace").split("\n"))
    return [entry for entry in entries if entry is not None]


def read_records(
    directory: Path | ObjectStoragePath, listed: Iterable[str], log: Any
) -> dict[str, list[Delivered]]:
    """The entries of every record among ``listed`` (names relative to ``directory``), by record name.

    One read per record (a GET on object storage). A record that cannot be read is skipped with a
    warning: the outputs it names are then downloaded again.

    :param directory: the destination.
    :param listed: names found under it (:func:`~airflow_provider_chamelaion.client.media.file_sizes`).
    :param log: where to warn.
    """
    records: dict[str, list[Delivered]] = {}
    for name in sorted(filter(is_record, listed)):
        try:
            records[name] = parse_record(read_bytes(directory / name))
        except Exception as err:
            log.warning(
                "Could not read the downloads record %s (%s); its outputs will be downloaded again", name, err
            )
    return records


def newest_entries(records: Iterable[Iterable[Delivered]]) -> dict[str, Delivered]:
    """Per name, the newest entry of any record: the one written by whoever wrote the file last.

    :param records: the entries of each record.
    """
    newest: dict[str, Delivered] = {}
    for entries in records:
        for entry in entries:
            if entry.name not in newest or entry.written_at > newest[entry.name].written_at:
                newest[entry.name] = entry
    return newest


def holds_output(
    entries: Mapping[str, Delivered], sizes: Mapping[str, int], name: str, request_id: str
) -> bool:
    """Whether the file ``name`` is known to hold ``request_id``'s complete output.

    :param entries: the newest entry per name (:func:`newest_entries`).
    :param sizes: the current size of each file present (a missing file has none).
    :param name: the output's name, relative to the destination.
    :param request_id: the job whose output it must hold.
    """
    entry = entries.get(name)
    return entry is not None and entry.request_id == request_id and sizes.get(name) == entry.size


class DownloadsRecord:
    """This task's record: the entries it already held, and every output this run delivers.

    :param path: where the record is (``destination / record_name(...)``).
    :param entries: the record's current entries (from :func:`read_records`).
    :param flush_every: write the record after this many new entries.
    :param flush_seconds: ... or once this many seconds passed since the last write, with entries pending.
    :param clock: seconds, monotonic (tests may pass their own).
    """

    def __init__(
        self,
        path: Path | ObjectStoragePath,
        entries: Iterable[Delivered] = (),
        *,
        flush_every: int = FLUSH_EVERY_AT_LEAST,
        flush_seconds: float = FLUSH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.entries = {entry.name: entry for entry in entries}
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self.clock = clock
        self.pending = 0
        self._last_flush = clock()

    def add(self, name: str, request_id: str, size: int) -> None:
        """Record that ``name`` now holds ``request_id``'s complete output; write the record when due.

        :param name: the output's name, relative to the destination.
        :param request_id: the job whose output was written there.
        :param size: its size in bytes.
        """
        self.entries[name] = Delivered(name, request_id, size, time.time())
        self.pending += 1
        if self.pending >= self.flush_every or self.clock() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the record whole, atomically (one put on object storage), if anything is pending."""
        if not self.pending:
            return
        lines = "".join(json.dumps(asdict(entry)) + "\n" for entry in self.entries.values())
        with atomic_write(self.path) as handle:
            handle.write(lines.encode())
        self.pending = 0
        self._last_flush = self.clock()
