"""What the API returns, as typed objects, and the one place API statuses map to outcomes.

The reference types ``status`` as a free string and documents only ``queued``, ``completed`` and
``failed``. This module is liberal in what it accepts (case, a few common synonyms, unknown fields)
and treats every status it does not know as "still running", so a new status on the server side
makes a DAG wait rather than fail.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any


class Outcome(str, enum.Enum):
    """What a request's status means for the task waiting on it."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RUNNING = "running"


#: Statuses that mean the output is ready. ``success`` is deliberately absent: the generate call
#: answers ``"status": "success"`` for a job that was only *accepted*.
SUCCESS_STATUSES = frozenset({"completed", "complete", "succeeded"})
#: Statuses after which the job will never produce an output. Cancelled jobs count as failed: waiting
#: on them would only end in a timeout.
FAILURE_STATUSES = frozenset(
    {"failed", "failure", "error", "errored", "cancelled", "canceled", "rejected", "expired"}
)


def outcome_of(status: str | None) -> Outcome:
    """Map an API status to an :class:`Outcome` (case-insensitive; unknown means running)."""
    exact = _EXACT_OUTCOMES.get(status)
    if exact is not None:
        return exact
    normalized = (status or "").strip().lower()
    if normalized in SUCCESS_STATUSES:
        return Outcome.SUCCEEDED
    if normalized in FAILURE_STATUSES:
        return Outcome.FAILED
    return Outcome.RUNNING


#: The statuses as the API spells them, looked up as they come: every poll of every waiting trigger
#: maps one, nearly always ``running`` or ``queued``. Anything else takes the normalising path above.
_EXACT_OUTCOMES: dict[str | None, Outcome] = {
    **dict.fromkeys(SUCCESS_STATUSES, Outcome.SUCCEEDED),
    **dict.fromkeys(FAILURE_STATUSES, Outcome.FAILED),
    **dict.fromkeys(("queued", "pending", "running", "processing", "in_progress"), Outcome.RUNNING),
}


_FRACTION = re.compile(r"(\.\d+)")


def parse_api_time(value: str | None) -> datetime | None:
    """An API timestamp as a timezone-aware ``datetime``; ``None`` when missing or unparseable.

    Accepts ISO 8601 with ``Z`` or an offset and any number of fractional digits; a time without a
    zone is taken as UTC (the reference's examples are all UTC).
    """
    if not value:
        return None
    text = value.strip().replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python 3.10's fromisoformat takes only 3 or 6 fractional digits: normalise to 6.
    text = _FRACTION.sub(lambda m: "." + (m.group(1)[1:] + "000000")[:6], text, count=1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


_OLDEST = datetime.min.replace(tzinfo=timezone.utc)


def newest_first(requests: Iterable[LipsyncRequest]) -> list[LipsyncRequest]:
    """``requests`` ordered by creation time, newest first, comparing parsed times (never text).

    A request whose ``created_at`` is missing or unparseable counts as the oldest. Ties (and the
    unparseable ones among themselves) keep the order given, which is the API's own listing order:
    the sort is stable.
    """

    def created(request: LipsyncRequest) -> datetime:
        return parse_api_time(request.created_at) or _OLDEST

    return sorted(requests, key=created, reverse=True)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class LipsyncRequest:
    """One lip-sync request as the API describes it (``LipsyncRequest`` in the reference).

    Timestamps are kept as the API's ISO-8601 strings so that :meth:`to_dict` round-trips exactly.
    """

    id: str
    status: str
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    output_url: str | None = None
    reference_id: str | None = None
    error_message: str | None = None

    @classmethod
    def from_api(cls, payload: Mapping[str, Any]) -> LipsyncRequest:
        """Build from the API's JSON object, ignoring fields this client does not know.

        :raises ValueError: when ``id`` or ``status`` is missing (the reference says they always
            are present).
        """
        # A trigger parses one answer per poll: the exact-dict test spares the ABC check for JSON.
        if type(payload) is not dict and not isinstance(payload, Mapping):
            raise ValueError(f"expected a JSON object for a lip-sync request, got {type(payload).__name__}")
        get = payload.get
        request_id, status = get("id"), get("status")
        if request_id is None or request_id == "" or status is None or status == "":
            missing = [name for name in ("id", "status") if get(name) in (None, "")]
            raise ValueError(f"lip-sync request is missing {', '.join(missing)}")
        return cls(
            str(request_id),
            str(status),
            _optional_str(get("created_at")),
            _optional_str(get("started_at")),
            _optional_str(get("finished_at")),
            _optional_str(get("output_url")),
            _optional_str(get("reference_id")),
            _optional_str(get("error_message")),
        )

    @property
    def outcome(self) -> Outcome:
        return outcome_of(self.status)

    @property
    def is_terminal(self) -> bool:
        return self.outcome is not Outcome.RUNNING

    def to_dict(self) -> dict[str, str | None]:
        """JSON-safe dict with the API's field names (safe to push to XCom)."""
        return asdict(self)


@dataclass(frozen=True)
class RequestPage:
    """One page of ``GET /v1/lipsync/requests``."""

    data: list[LipsyncRequest] = field(default_factory=list)
    total: int = 0
    limit: int = 0
    offset: int = 0

    @classmethod
    def from_api(cls, payload: Mapping[str, Any]) -> RequestPage:
        if not isinstance(payload, Mapping) or not isinstance(payload.get("data"), list):
            raise ValueError("expected an object with a 'data' list")
        pagination = payload.get("pagination") or {}
        data = [LipsyncRequest.from_api(item) for item in payload["data"]]
        return cls(
            data=data,
            total=int(pagination.get("total", len(data))),
            limit=int(pagination.get("limit", len(data))),
            offset=int(pagination.get("offset", 0)),
        )


__all__ = ["LipsyncRequest", "Outcome", "RequestPage", "outcome_of"]
