"""Catalogues for batch backfills: load a list, JSON Lines or CSV catalogue, validate it whole, split it.

A catalogue is a list of items, each with ``video_url``, ``audio_url`` and ``reference_id`` (required)
and ``disable_active_speaker_detection`` (optional). Other keys (a title, a language) are allowed and
ignored, so a catalogue exported from a CMS can be used as it is.

Every item is checked before any HTTP call; all problems are reported in one error naming the rows,
so a catalogue with a typo on row 7,341 fails at once and submits nothing.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_chamelaion.client.inputs import OPTIONS, JobInputs
from airflow_provider_chamelaion.client.media import (
    StorageLocation,
    atomic_write,
    is_object_storage,
    storage_path,
)
from airflow_provider_chamelaion.exceptions import ChamelaionConfigError

if TYPE_CHECKING:
    from airflow_provider_chamelaion.version_compat import ObjectStoragePath

#: What a batch operator accepts: the items themselves, or where to read them.
CatalogueSource = Sequence[Mapping[str, Any]] | StorageLocation

CATALOGUE_FORMATS = ("jsonl", "csv")
#: How many problems one validation error lists before summarizing the rest.
MAX_LISTED_PROBLEMS = 20
#: The only texts a CSV cell may hold for a flag (any case; empty means absent). Not 1/0 or yes/no: the
#: API takes a JSON boolean, and a spreadsheet's "1" is as likely a typo as a choice.
_CSV_BOOLEANS = {"true": True, "false": False}


@dataclass(frozen=True)
class CatalogueItem:
    """One validated catalogue item: its 1-based ``row`` (line number in a file) and its job's inputs."""

    row: int
    inputs: JobInputs

    @property
    def reference_id(self) -> str:
        return str(self.inputs.reference_id)

    def to_dict(self) -> dict[str, Any]:
        return self.inputs.to_dict()


def _format_of(path: Path | ObjectStoragePath, catalogue_format: str | None) -> str:
    if catalogue_format is not None:
        if catalogue_format not in CATALOGUE_FORMATS:
            raise ChamelaionConfigError(
                f"catalogue_format must be one of {', '.join(CATALOGUE_FORMATS)}, got {catalogue_format!r}"
            )
        return catalogue_format
    suffix = path.name.rsplit(".", 1)[-1].lower() if "." in path.name else ""
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix == "csv":
        return "csv"
    raise ChamelaionConfigError(
        f"cannot tell the format of catalogue {str(path)!r} from its name: use a .jsonl or .csv file, "
        "or pass catalogue_format='jsonl' or 'csv'"
    )


def _csv_value(key: str, value: str) -> Any:
    """A CSV cell as the item's value: text, except a flag (``true``/``false``, any case, or empty)."""
    if OPTIONS.get(key) is not bool:
        return value
    lowered = value.strip().lower()
    if lowered == "":
        return None
    return _CSV_BOOLEANS.get(lowered, value)  # anything else is reported by validation, with its line


def _read_text(path: Path | ObjectStoragePath) -> str:
    # utf-8-sig: spreadsheet exports start with a byte order mark, which would otherwise become part
    # of the first column's name (every row then "has no reference_id").
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            return str(handle.read())
    except FileNotFoundError:
        raise ChamelaionConfigError(f"catalogue {str(path)!r} does not exist") from None
    except OSError as err:
        raise ChamelaionConfigError(f"catalogue {str(path)!r} cannot be read: {err}") from None


def read_raw(path: Path | ObjectStoragePath, catalogue_format: str | None = None) -> list[tuple[int, Any]]:
    """(line number, raw item) for every item of a catalogue file; blank lines are skipped.

    Line numbers are physical lines, the first being 1 (in a CSV file, the header), as an editor or a
    spreadsheet shows them.
    """
    fmt = _format_of(path, catalogue_format)
    text = _read_text(path)
    return _csv_rows(text) if fmt == "csv" else _json_lines(text)


def _json_lines(text: str) -> list[tuple[int, Any]]:
    rows: list[tuple[int, Any]] = []
    # Split on "\n" only: str.splitlines() also splits on U+2028, U+2029 and other characters that a
    # JSON string may hold unescaped. A "\r" before the "\n" is JSON whitespace, which json.loads skips.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip(" \t\r"):
            continue
        try:
            rows.append((number, json.loads(line)))
        except ValueError as err:
            rows.append((number, _Unparsable(str(err))))
    return rows


def _csv_rows(text: str) -> list[tuple[int, Any]]:
    # The reader's line_num counts physical lines read so far, so a record starts on the line after
    # the previous record ended: a quoted cell spanning lines does not shift later rows' numbers.
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return []
    rows: list[tuple[int, Any]] = []
    ended = reader.line_num
    for values in reader:
        started, ended = ended + 1, reader.line_num
        if not values:  # a blank line
            continue
        # Like csv.DictReader: cells past the header's are ignored, missing ones are absent.
        cells = zip(header, values[: len(header)], strict=False)
        rows.append((started, {key: _csv_value(key, value) for key, value in cells if key}))
    return rows


@dataclass(frozen=True)
class _Unparsable:
    reason: str


def _check_item(row: int, raw: Any) -> tuple[CatalogueItem | None, list[str]]:
    if isinstance(raw, _Unparsable):
        return None, [f"not valid JSON ({raw.reason})"]
    if not isinstance(raw, Mapping):
        return None, [
            f"expected an object with video_url, audio_url and reference_id, got {type(raw).__name__}"
        ]
    inputs, problems = JobInputs.check(raw, reference_id_required=True)
    if inputs is None:
        return None, problems
    return CatalogueItem(row=row, inputs=inputs), []


def validate_items(raw_items: Iterable[tuple[int, Any]], *, where: str = "catalogue") -> list[CatalogueItem]:
    """Check every item; raise one :class:`ChamelaionConfigError` naming every bad row, or return them all.

    :param raw_items: (row number, raw item) pairs.
    :param where: what the rows belong to, for the message (a file name, or "catalogue").
    """
    items: list[CatalogueItem] = []
    problems: list[str] = []
    first_row: dict[str, int] = {}
    for row, raw in raw_items:
        item, item_problems = _check_item(row, raw)
        problems.extend(f"row {row}: {problem}" for problem in item_problems)
        if item is None:
            continue
        if item.reference_id in first_row:
            problems.append(
                f"row {row}: reference_id {item.reference_id!r} is also on row {first_row[item.reference_id]}; "
                "each item needs its own reference_id (it is how re-runs find the job already paid for)"
            )
            continue
        first_row[item.reference_id] = row
        items.append(item)
    if problems:
        listed = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(listed)
        raise ChamelaionConfigError(
            f"{where} has {len(problems)} problem(s); nothing was submitted. Fix these rows:\n  "
            + "\n  ".join(listed)
            + (f"\n  ... and {more} more" if more else "")
        )
    if not items:
        raise ChamelaionConfigError(f"{where} is empty: give at least one item")
    return items


def load_catalogue(source: CatalogueSource, catalogue_format: str | None = None) -> list[CatalogueItem]:
    """The validated items of a catalogue given as a list of dicts or as a JSON Lines / CSV file path."""
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        # Any sequence: a list, or the lazy sequence Airflow hands over for an upstream's XCom.
        return validate_items(enumerate(source, start=1))
    if isinstance(source, str) and not source.strip():
        raise ChamelaionConfigError("catalogue is empty: give a list of items or a .jsonl/.csv path")
    if isinstance(source, (str, os.PathLike)) or is_object_storage(source):
        path = storage_path(source)
        return validate_items(read_raw(path, catalogue_format), where=f"catalogue {str(path)!r}")
    raise ChamelaionConfigError(
        f"catalogue must be a list of items or a local/object-storage path, got {type(source).__name__}"
    )


def split_catalogue(
    source: CatalogueSource,
    destination: StorageLocation,
    *,
    chunk_size: int = 5000,
    catalogue_format: str | None = None,
) -> list[str]:
    """Validate a catalogue, then write it as JSON Lines chunk files of at most ``chunk_size`` items.

    For catalogues beyond one task's comfort: map a batch operator over the returned paths
    (``.expand(catalogue=...)``), so 100,000 items become 20 mapped tasks, far below
    ``[core] max_map_length``, spread over Airflow's workers on any executor.

    :param destination: a local or object-storage directory; chunks are named ``chunk-00000.jsonl``...
        and written atomically, so a re-run rewrites identical chunks.
    :return: the chunk paths, as strings (XCom-friendly).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ChamelaionConfigError(f"chunk_size must be a whole number of at least 1, got {chunk_size!r}")
    items = load_catalogue(source, catalogue_format)
    directory = storage_path(destination)
    paths: list[str] = []
    for number, start in enumerate(range(0, len(items), chunk_size)):
        path = directory / f"chunk-{number:05d}.jsonl"
        with atomic_write(path) as handle:
            for item in items[start : start + chunk_size]:
                handle.write(json.dumps(item.to_dict()).encode() + b"\n")
        paths.append(str(path))
    return paths


__all__ = ["CatalogueItem", "load_catalogue", "split_catalogue"]
