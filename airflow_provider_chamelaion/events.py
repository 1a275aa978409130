"""What "waiting on a lip-sync request" can end in, and how each ending becomes a task outcome.

The trigger (deferrable mode) and the sensor's and operator's poll loops (poke/reschedule mode,
``deferrable=False``) all produce the same :class:`WaitEvent` dicts here and resolve them with
:func:`resolve_wait_event`, so the three ways of waiting cannot disagree about what a status means.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from airflow_provider_chamelaion.exceptions import (
    ChamelaionAPIError,
    ChamelaionError,
    LipsyncJobFailedError,
    is_permanent,
)
from airflow_provider_chamelaion.models import LipsyncRequest, Outcome

if TYPE_CHECKING:
    from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
    from airflow_provider_chamelaion.progress import WaitReporter

WaitStatus = Literal["completed", "failed", "timeout", "error"]
WAIT_STATUSES: frozenset[str] = frozenset({"completed", "failed", "timeout", "error"})


class WaitEvent(TypedDict):
    """The payload of every event the trigger yields (JSON primitives only)."""

    status: WaitStatus
    request_id: str
    request: dict[str, str | None] | None
    message: str


def event_for_request(request: LipsyncRequest, request_id: str) -> WaitEvent | None:
    """The final event for a request in a terminal state, or ``None`` while it is still running."""
    outcome = request.outcome
    if outcome is Outcome.RUNNING:
        return None
    if outcome is Outcome.SUCCEEDED:
        return WaitEvent(
            status="completed",
            request_id=request_id,
            request=request.to_dict(),
            message=f"Chamelaion lip-sync request {request.id} completed",
        )
    return WaitEvent(
        status="failed",
        request_id=request_id,
        request=request.to_dict(),
        message=str(LipsyncJobFailedError(request.id, request.error_message, request.status)),
    )


def timeout_event(request_id: str, last: LipsyncRequest | None, deadline: float | None) -> WaitEvent:
    status = f"; its last status was {last.status!r}" if last else ""
    when = (
        ""
        if deadline is None
        else f" by its deadline {datetime.fromtimestamp(deadline, timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
    )
    return WaitEvent(
        status="timeout",
        request_id=request_id,
        request=last.to_dict() if last else None,
        message=f"Chamelaion lip-sync request {request_id} did not finish{when}{status}",
    )


def error_event(request_id: str, error: BaseException, last: LipsyncRequest | None = None) -> WaitEvent:
    return WaitEvent(
        status="error",
        request_id=request_id,
        request=last.to_dict() if last else None,
        message=f"Stopped waiting on Chamelaion lip-sync request {request_id}: {error}",
    )


class LipsyncWaitTimeout(ChamelaionError):
    """A lip-sync request did not finish within the task's wait limit."""


def resolve_wait_event(
    event: Any,
    *,
    timeout_error: type[Exception] = LipsyncWaitTimeout,
) -> dict[str, str | None]:
    """Turn a :class:`WaitEvent` into the finished request's dict, or raise.

    :param timeout_error: raised for a ``timeout`` event (a sensor passes ``AirflowSensorTimeout`` so
        ``soft_fail`` applies).
    :raises LipsyncJobFailedError: the job failed; the message holds its id and the API's message.
    :raises ChamelaionError: the event is malformed or reports an error.
    """
    if not isinstance(event, Mapping) or event.get("status") not in WAIT_STATUSES:
        raise ChamelaionError(f"Malformed event from LipsyncRequestTrigger: {event!r}")
    status = event["status"]
    request = event.get("request")
    if status == "completed":
        if not isinstance(request, Mapping):
            raise ChamelaionError(f"Malformed 'completed' event without the request: {event!r}")
        return dict(request)
    if status == "failed":
        request = request if isinstance(request, Mapping) else {}
        raise LipsyncJobFailedError(
            str(request.get("id") or event.get("request_id")),
            request.get("error_message"),
            str(request.get("status") or "failed"),
        )
    if status == "timeout":
        raise timeout_error(str(event.get("message") or "timed out"))
    raise ChamelaionError(str(event.get("message") or "the trigger reported an error"))


def poll_once(
    hook: ChamelaionHook,
    request_id: str,
    log: Any,
    reporter: WaitReporter | None = None,
    *,
    report_status: bool = True,
) -> dict[str, str | None] | None:
    """One synchronous look at a request: its dict once completed, ``None`` while it is not finished.

    The sync twin of one trigger poll, used by the sensor's ``poke`` and the operator's
    non-deferrable wait. A transient error (after the hook's own retries) counts as "not finished
    yet", so an API hiccup never fails the task; the wait's timeout bounds an outage.

    :param reporter: what a polling loop logs statuses through (one line per change, and a "still
        waiting" line at most every 10 minutes); without it, the status is logged on every call.
    :param report_status: ``False`` logs nothing for a request still running: the look before
        deferring passes it, as the trigger that takes over reports the status, once.

    :raises LipsyncJobFailedError: the job failed.
    :raises ChamelaionAPIError: a permanent error (bad key, unknown id).
    """
    try:
        request = hook.get_request(request_id)
    except ChamelaionAPIError as err:
        if is_permanent(err):
            raise
        log.warning("Could not read request %s this time, will try again: %s", request_id, err)
        return None
    event = event_for_request(request, request_id)
    if event is None:
        if reporter is not None:  # a loop that polls again: status changes and "still waiting" lines
            reporter.report(request.status)
        elif report_status:
            log.info("Chamelaion lip-sync request %s is %s", request_id, request.status)
        return None
    return resolve_wait_event(event)
