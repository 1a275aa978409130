"""Which job is this task instance's work: derived ``reference_id`` values, the identity of the inputs, and
the record an earlier try leaves in Airflow's task state store.

Nothing here looks at a clock. A job is this task instance's when its ``reference_id`` says so (a
derived id is unique to the task instance *and* its inputs), or when the operator saw it appear: the
ids that already had the ``reference_id`` before the first POST are recorded, and a job outside them
is the one that POST created.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_chamelaion.client.media import is_file_object

if TYPE_CHECKING:
    from airflow_provider_chamelaion.client.media import MediaInfo, MediaSource

#: The task state store key of this task instance's submission.
STATE_KEY = "chamelaion_submission"
DERIVED_PREFIX = "airflow-"
#: Upper bound of a derived ``reference_id`` (Airflow allows 250-character dag and task ids).
MAX_DERIVED_LENGTH = 100
#: Hex digits of the digest in a derived id: 64 bits, so two task instances colliding is not a concern.
DIGEST_CHARS = 16
_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNREADABLE = re.compile(r"[^A-Za-z0-9_.-]+")


def digest(value: Any) -> str:
    """SHA-256 (hex) of ``value`` as canonical JSON: sorted keys, no whitespace, unescaped text."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def url_identity(url: str) -> str:
    """What identifies a media URL: scheme, lower-cased host, port and path.

    The query string and fragment are left out on purpose: pre-signed URLs (S3, GCS, CDN tokens)
    carry a signature and an expiry there that change on every render, so a retry would otherwise
    see new inputs and pay for a second job.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}{parts.path or '/'}"


def source_identity(source: MediaSource, info: MediaInfo) -> dict[str, Any]:
    """What identifies an uploaded file: its path or URI as given (a file object: its name) and size."""
    if is_file_object(source):
        where = str(getattr(source, "name", "") or info.filename)
    elif isinstance(source, (str, os.PathLike)):
        where = os.fspath(source)
    else:
        where = str(source)  # an ObjectStoragePath: its URI
    return {"source": where, "size": info.size}


def _readable(text: str, limit: int) -> str:
    return _UNREADABLE.sub("_", text)[:limit]


def derived_reference_id(
    *,
    dag_id: str,
    task_id: str,
    run_id: str,
    map_index: int | None,
    inputs: Mapping[str, Any],
    namespace: str = "",
) -> str:
    """The ``reference_id`` of a task instance's job when the user gives none.

    ``airflow-<dag_id>.<task_id>-<digest>``, at most 100 characters. The digest (SHA-256 over the
    deployment namespace, dag id, task id, run id, map index and the input identity, unescaped) is
    what makes it unique and makes it change when the inputs change; the readable part is only for
    people and is shortened (and stripped of unusual characters) as needed.
    """
    identity = {
        "namespace": namespace,
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "map_index": -1 if map_index is None or map_index < 0 else int(map_index),
        "inputs": dict(inputs),
    }
    suffix = "-" + digest(identity)[:DIGEST_CHARS]
    budget = MAX_DERIVED_LENGTH - len(DERIVED_PREFIX) - len(suffix) - 1  # -1: the dot
    dag = _readable(dag_id, max(budget - len(task_id), budget // 2))
    task = _readable(task_id, budget - len(dag))
    return f"{DERIVED_PREFIX}{dag}.{task}{suffix}"


@dataclass(frozen=True)
class Submission:
    """What a try records about its submission, so a later try of the same task instance can find it.

    :param reference_id: the job's ``reference_id`` (``None`` in upload mode).
    :param inputs: digest of the input identity the job was submitted with.
    :param request_id: the job's id, once known.
    :param known_ids: ids of the jobs (not failed) that already had ``reference_id`` before the first
        POST: none of them is this task instance's work.
    """

    reference_id: str | None
    inputs: str
    request_id: str | None = None
    known_ids: tuple[str, ...] = field(default=())

    def to_state(self) -> dict[str, Any]:
        state = asdict(self)
        state["known_ids"] = list(self.known_ids)
        return state

    @classmethod
    def from_state(cls, value: Any) -> Submission | None:
        if not isinstance(value, Mapping) or not isinstance(value.get("inputs"), str):
            return None
        known = value.get("known_ids") or ()
        return cls(
            reference_id=value.get("reference_id"),
            inputs=value["inputs"],
            request_id=value.get("request_id") or None,
            known_ids=tuple(str(item) for item in known) if isinstance(known, (list, tuple)) else (),
        )

    def mismatch(self, reference_id: str | None, inputs: str) -> str | None:
        """Why this record is not about the job this try would submit; ``None`` when it is."""
        if self.reference_id != reference_id:
            return f"its reference_id {self.reference_id!r} is not this try's {reference_id!r}"
        if self.inputs != inputs:
            return "its inputs (video, audio or options) differ from this try's"
        return None


class SubmissionStore:
    """This task instance's :class:`Submission` in Airflow's task state store (Airflow 3.3+).

    Best effort: where the store is unavailable (older Airflow, or an error) nothing is recorded and
    every try starts from what the API lists.
    """

    def __init__(self, context: Mapping[str, Any], log: Any) -> None:
        self._store = context.get("task_state_store")
        self._log = log

    def load(self, reference_id: str | None, inputs: str) -> Submission | None:
        """The record an earlier try left, if it is about this job; a stale one is ignored, with a log line."""
        if self._store is None:
            return None
        try:
            value = self._store.get(STATE_KEY)
        except Exception as err:
            self._log.warning("Could not read the task state store: %s", err)
            return None
        if value is None:
            return None
        record = Submission.from_state(value)
        reason = (
            "it was written by an older version" if record is None else record.mismatch(reference_id, inputs)
        )
        if reason is not None:
            self._log.warning(
                "Ignoring the submission an earlier try recorded (request %s): %s; it will be replaced",
                value.get("request_id") if isinstance(value, Mapping) else None,
                reason,
            )
            return None
        return record

    def save(self, record: Submission) -> None:
        if self._store is None:
            return
        try:
            self._store.set(STATE_KEY, record.to_state())
        except Exception as err:
            self._log.warning("Could not write the task state store: %s", err)
