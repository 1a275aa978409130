"""The batch manifest: one JSON Lines row per catalogue item, on a local or object-storage path.

It is the batch's memory between tries, the worker (which submits) and the triggerer (which waits), and
its result for users and for the batch download. The first line names its **owner**, the task instance
that wrote it (dag, task, run, map index), and a digest of its catalogue; every other line is one item:
``reference_id``, ``request_id``, ``status``, ``output_url``, ``error_message``, ``source`` (``submitted``
by this task instance, ``reused`` from elsewhere, or ``null`` while the item waits to be submitted), the
item's ``inputs`` (``video_url``, ``audio_url`` and any options: waves and retries
submit from these, not from a catalogue that may have been edited since) and ``duplicates`` (ids of other
live jobs with the same ``reference_id`` that appeared while this batch submitted: paid twice, named so a
person can cancel one). It is written atomically (a temporary sibling renamed into place, or one put), so
a reader never sees half of it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_chamelaion.batch.catalogue import CatalogueItem
from airflow_provider_chamelaion.client.inputs import JobInputs
from airflow_provider_chamelaion.client.media import StorageLocation, atomic_write, storage_path
from airflow_provider_chamelaion.client.models import LipsyncRequest, Outcome, outcome_of
from airflow_provider_chamelaion.exceptions import ChamelaionConfigError, ChamelaionError

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_chamelaion.version_compat import ObjectStoragePath

#: Status of an item not submitted yet (planned, or waiting for a slot under ``max_in_flight``).
NOT_SUBMITTED = "not_submitted"
#: Status of an item the API refused to create (422 and the like); not an API status.
REJECTED = "rejected"
Source = Literal["submitted", "reused"]
COUNT_NAMES = ("not_submitted", "queued", "running", "completed", "failed")
#: The first line's key; its value is the manifest format's version.
HEADER_KEY = "chamelaion_manifest"
FORMAT_VERSION = 2


@dataclass(frozen=True)
class ManifestOwner:
    """The task instance a manifest belongs to: only it may submit for, wait on or report its rows."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1

    @classmethod
    def of(cls, ti: Any) -> ManifestOwner:
        """The owner identity of a task instance (``context["ti"]``)."""
        map_index = getattr(ti, "map_index", -1)
        return cls(
            str(ti.dag_id), str(ti.task_id), str(ti.run_id), -1 if map_index is None else int(map_index)
        )

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ManifestOwner:
        return cls(
            str(value["dag_id"]), str(value["task_id"]), str(value["run_id"]), int(value.get("map_index", -1))
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        mapped = f", map index {self.map_index}" if self.map_index >= 0 else ""
        return f"task {self.dag_id}.{self.task_id} of run {self.run_id!r}{mapped}"


@dataclass
class ManifestRow:
    reference_id: str
    request_id: str | None = None
    status: str = NOT_SUBMITTED
    output_url: str | None = None
    error_message: str | None = None
    source: Source | None = None
    #: The item's inputs as its catalogue gave them (:meth:`JobInputs.to_dict`, ``reference_id`` aside).
    inputs: dict[str, Any] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)

    @classmethod
    def for_item(cls, item: CatalogueItem) -> ManifestRow:
        """A row for a catalogue item that has no job yet."""
        inputs = item.inputs.to_dict()
        inputs.pop("reference_id", None)
        return cls(item.reference_id, inputs=inputs)

    def job_inputs(self) -> JobInputs:
        """The inputs to submit this row's job with."""
        return JobInputs(reference_id=self.reference_id, **self.inputs)

    def use(self, request: LipsyncRequest, source: Source) -> None:
        """Make ``request`` this row's job."""
        self.request_id, self.source = request.id, source
        self.update(request)

    def update(self, request: LipsyncRequest) -> None:
        self.status = request.status
        self.output_url = request.output_url
        self.error_message = request.error_message

    def same_inputs(self, item: CatalogueItem) -> bool:
        """Whether this row was planned from exactly ``item``'s inputs."""
        return self.job_inputs() == item.inputs

    @property
    def stage(self) -> str:
        """``not_submitted``, ``queued``, ``running``, ``completed`` or ``failed`` (for progress counts)."""
        if self.status == NOT_SUBMITTED:
            return NOT_SUBMITTED
        if self.status == REJECTED:
            return "failed"
        outcome = outcome_of(self.status)  # the one status mapping (models.py)
        if outcome is Outcome.SUCCEEDED:
            return "completed"
        if outcome is Outcome.FAILED:
            return "failed"
        return "queued" if self.status.strip().lower() == "queued" else "running"

    @property
    def in_flight(self) -> bool:
        """Submitted and not finished: what ``max_in_flight`` counts."""
        return self.stage in ("queued", "running")

    @property
    def needs_job(self) -> bool:
        """No live job: not submitted yet, refused, or its job failed (a retry or re-run submits again)."""
        return self.stage in (NOT_SUBMITTED, "failed")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Manifest:
    """A manifest's owner line and rows."""

    owner: ManifestOwner | None
    catalogue_digest: str | None
    rows: list[ManifestRow]

    def header(self) -> dict[str, Any]:
        return {
            HEADER_KEY: FORMAT_VERSION,
            "owner": None if self.owner is None else self.owner.to_dict(),
            "catalogue_digest": self.catalogue_digest,
        }

    def check_owner(self, owner: ManifestOwner, location: str) -> None:
        """Refuse a manifest another task instance wrote, naming it and the fix; before any request."""
        if self.owner == owner:
            return
        who = "an older version of the provider" if self.owner is None else str(self.owner)
        raise ChamelaionConfigError(
            f"manifest_path {location!r} already holds the manifest of {who}, not of this {owner}. "
            "Each task instance needs its own manifest: put {{ run_id }} (and, in a mapped task, "
            "{{ ti.map_index }}) in manifest_path, or delete the file if it is no longer needed. "
            "Nothing was submitted."
        )


def count_stages(rows: Iterable[ManifestRow]) -> dict[str, int]:
    """How many rows are in each stage (every stage named, zeros included)."""
    counts = Counter(row.stage for row in rows)
    return {name: counts.get(name, 0) for name in COUNT_NAMES}


def format_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{counts[name]} {name.replace('_', ' ')}" for name in COUNT_NAMES if counts.get(name))


def write_manifest(
    location: StorageLocation,
    rows: Iterable[ManifestRow],
    *,
    owner: ManifestOwner | None = None,
    catalogue_digest: str | None = None,
) -> Path | ObjectStoragePath:
    """Write the owner line and every row as one JSON line each, atomically; returns the path written."""
    path = storage_path(location)
    manifest = Manifest(owner, catalogue_digest, [])
    lines = [json.dumps(manifest.header())] + [json.dumps(row.to_dict()) for row in rows]
    with atomic_write(path) as handle:
        handle.write(("\n".join(lines) + "\n").encode())
    return path


def save_manifest(location: StorageLocation, manifest: Manifest) -> Path | ObjectStoragePath:
    return write_manifest(
        location, manifest.rows, owner=manifest.owner, catalogue_digest=manifest.catalogue_digest
    )


def load_manifest(location: StorageLocation, *, missing_ok: bool = False) -> Manifest | None:
    """The manifest at ``location`` (owner line and rows); ``None`` if there is none and ``missing_ok``."""
    path = storage_path(location)
    try:
        with path.open("r", encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise ChamelaionError(f"batch manifest {str(path)!r} does not exist") from None
    manifest = Manifest(None, None, [])
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            if isinstance(value, dict) and HEADER_KEY in value:
                owner = value.get("owner")
                manifest.owner = ManifestOwner.from_dict(owner) if owner else None
                manifest.catalogue_digest = value.get("catalogue_digest")
                continue
            manifest.rows.append(ManifestRow(**value))
        except (ValueError, TypeError, KeyError) as err:
            raise ChamelaionError(
                f"batch manifest {str(path)!r} line {number} is not a manifest row: {err}"
            ) from None
    return manifest


def read_manifest(location: StorageLocation) -> list[ManifestRow]:
    """The rows of the manifest at ``location``."""
    manifest = load_manifest(location)
    assert manifest is not None
    return manifest.rows


__all__ = ["Manifest", "ManifestOwner", "ManifestRow", "load_manifest", "read_manifest"]
