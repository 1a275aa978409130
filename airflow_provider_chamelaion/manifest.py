"""The batch manifest: one JSON Lines row per catalogue item, on a local or object-storage path.

It is the batch's memory between the worker (which submits) and the triggerer (which waits), and its
result for users and for the batch download: ``reference_id``, ``request_id``, ``status``,
``output_url``, ``error_message`` and ``source`` (``submitted`` by this run, ``reused`` from an earlier
one, or ``null`` while the item waits for a free slot under ``max_in_flight``). It is written
atomically (a temporary sibling renamed into place), so a reader never sees half of it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_chamelaion.catalogue import CataloguePath, as_path
from airflow_provider_chamelaion.exceptions import ChamelaionError
from airflow_provider_chamelaion.media import atomic_write
from airflow_provider_chamelaion.models import LipsyncRequest, Outcome, outcome_of

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_chamelaion.version_compat import ObjectStoragePath

#: Status of an item not submitted yet (waiting for a slot under ``max_in_flight``); not an API status.
NOT_SUBMITTED = "not_submitted"
#: Status of an item the API refused to create (422 and the like); not an API status.
REJECTED = "rejected"
Source = Literal["submitted", "reused"]
COUNT_NAMES = ("not_submitted", "queued", "running", "completed", "failed")


@dataclass
class ManifestRow:
    reference_id: str
    request_id: str | None = None
    status: str = NOT_SUBMITTED
    output_url: str | None = None
    error_message: str | None = None
    source: Source | None = None

    @classmethod
    def for_request(cls, reference_id: str, request: LipsyncRequest, source: Source) -> ManifestRow:
        return cls(
            reference_id, request.id, request.status, request.output_url, request.error_message, source
        )

    def update(self, request: LipsyncRequest) -> None:
        self.status = request.status
        self.output_url = request.output_url
        self.error_message = request.error_message

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_stages(rows: Iterable[ManifestRow]) -> dict[str, int]:
    """How many rows are in each stage (every stage named, zeros included)."""
    counts = Counter(row.stage for row in rows)
    return {name: counts.get(name, 0) for name in COUNT_NAMES}


def format_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{counts[name]} {name.replace('_', ' ')}" for name in COUNT_NAMES if counts.get(name))


def write_manifest(location: CataloguePath, rows: Iterable[ManifestRow]) -> Path | ObjectStoragePath:
    """Write every row as one JSON line, atomically; returns the path written."""
    path = as_path(location)
    with atomic_write(path) as handle:
        handle.write("".join(json.dumps(row.to_dict()) + "\n" for row in rows).encode())
    return path


def read_manifest(location: CataloguePath) -> list[ManifestRow]:
    """The rows of a manifest written by :func:`write_manifest`."""
    path = as_path(location)
    try:
        with path.open("r", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise ChamelaionError(f"batch manifest {str(path)!r} does not exist") from None
    rows: list[ManifestRow] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(ManifestRow(**json.loads(line)))
        except (ValueError, TypeError) as err:
            raise ChamelaionError(
                f"batch manifest {str(path)!r} line {number} is not a manifest row: {err}"
            ) from None
    return rows
