"""What "waiting on a lip-sync request" can end in, and how each ending becomes a task outcome.

The trigger (deferrable mode) ends a wait with a :class:`WaitEvent`; the sensor's and operator's poll
loops (poke/reschedule mode, ``deferrable=False``) look with :func:`poll_once`. Both decide what a
status means through the same :class:`~airflow_provider_chamelaion.client.models.Outcome` map and raise the
same errors, so the ways of waiting cannot disagree.

**What an event may carry.** Airflow logs every trigger event whole (the triggerer's ``Trigger fired
event … result=TriggerEvent<{…}>`` line, in the task's ``*.log.trigger.*`` file) and stores it in the
task instance's ``next_kwargs`` row until the task resumes. So an event carries only what the worker
needs to finish: the request id, the job's status and the API's error message. Never the signed
``output_url`` (its query string is a key to the output until it expires): the worker that resumes
fetches the request once (:func:`completed_request`) and gets a fresh URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict

from airflow_provider_chamelaion.client.models import LipsyncRequest, Outcome
from airflow_provider_chamelaion.exceptions import (
    ChamelaionAPIError,
    ChamelaionError,
    LipsyncJobFailedError,
    LipsyncWaitTimeout,
    is_permanent,
)

if TYPE_CHECKING:
    from airflow_provider_chamelaion.utils.progress import WaitReporter


class ReadsRequests(Protocol):
    """What a wait needs of the hook: one request, by id (``ChamelaionHook`` is one)."""

    def get_request(self, request_id: str) -> LipsyncRequest: ...


WaitStatus = Literal["completed", "failed", "timeout", "error"]
WAIT_STATUSES: frozenset[str] = frozenset({"completed", "failed", "timeout", "error"})


class WaitEvent(TypedDict):
    """The payload of every event the trigger yields: JSON primitives, and nothing a log must not show.

    :param status: how the wait ended: ``completed``, ``failed``, ``timeout`` or ``error``.
    :param request_id: the job's id (the API's id once the trigger has read the job, else the id or
        ``reference_id`` it was waiting on).
    :param job_status: the job's last status as the API reported it (``None`` if never read).
    :param error_message: the API's ``error_message`` of a failed job.
    :param message: a sentence for the task log.
    :param try_number: the try that deferred (a later try handed this event, as Airflow 3.0 does when
        it retries a deferred task, starts over instead: :func:`is_stale`).
    """

    status: WaitStatus
    request_id: str
    job_status: str | None
    error_message: str | None
    message: str
    try_number: int | None


def event_for_request(request: LipsyncRequest, request_id: str) -> WaitEvent | None:
    """The final event for a request in a terminal state, or ``None`` while it is still running."""
    outcome = request.outcome
    if outcome is Outcome.RUNNING:
        return None
    if outcome is Outcome.SUCCEEDED:
        return _event("completed", request, request_id, f"Chamelaion lip-sync request {request.id} completed")
    failure = LipsyncJobFailedError(request.id, request.error_message, request.status)
    return _event("failed", request, request_id, str(failure))


def timeout_event(request_id: str, last: LipsyncRequest | None, deadline: float | None) -> WaitEvent:
    status = f"; its last status was {last.status!r}" if last else ""
    when = (
        ""
        if deadline is None
        else f" by its deadline {datetime.fromtimestamp(deadline, timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
    )
    return _event(
        "timeout", last, request_id, f"Chamelaion lip-sync request {request_id} did not finish{when}{status}"
    )


def error_event(request_id: str, error: BaseException, last: LipsyncRequest | None = None) -> WaitEvent:
    return _event(
        "error", last, request_id, f"Stopped waiting on Chamelaion lip-sync request {request_id}: {error}"
    )


def _event(status: WaitStatus, last: LipsyncRequest | None, request_id: str, message: str) -> WaitEvent:
    return WaitEvent(
        status=status,
        request_id=last.id if last is not None else request_id,
        job_status=last.status if last is not None else None,
        error_message=last.error_message if last is not None else None,
        message=message,
        try_number=None,  # the trigger sets it: only it knows which try deferred
    )


def is_stale(event: Any, context: Any) -> bool:
    """Whether ``event`` was made for an earlier try of this task instance than the one resuming.

    Airflow 3.0 retries a failed try of a deferred task by calling the resume method with that try's
    event (3.1 and later start over at ``execute``): the event's try number tells, on every line, without
    asking which line this is. An event without one (a trigger from before it carried it) is current.
    """
    made_for = event.get("try_number") if isinstance(event, Mapping) else None
    current = getattr(context["ti"], "try_number", None)
    return made_for is not None and current is not None and made_for != current


def resolve_wait_event(event: Any, *, timeout_error: type[Exception] = LipsyncWaitTimeout) -> str:
    """The id of the completed job a :class:`WaitEvent` reports, or raise for any other ending.

    :param timeout_error: raised for a ``timeout`` event (a sensor passes ``AirflowSensorTimeout`` so
        ``soft_fail`` applies).
    :raises LipsyncJobFailedError: the job failed; the message holds its id and the API's message.
    :raises ChamelaionError: the event is malformed or reports an error.
    """
    if not isinstance(event, Mapping) or event.get("status") not in WAIT_STATUSES:
        raise ChamelaionError(f"Malformed event from LipsyncRequestTrigger: {_described(event)}")
    request_id = event.get("request_id")
    status = event["status"]
    if status == "completed":
        if not isinstance(request_id, str) or not request_id:
            raise ChamelaionError(f"Malformed 'completed' event without a request id: {_described(event)}")
        return request_id
    if status == "failed":
        raise LipsyncJobFailedError(
            str(request_id), event.get("error_message"), str(event.get("job_status") or "failed")
        )
    if status == "timeout":
        raise timeout_error(str(event.get("message") or "timed out"))
    raise ChamelaionError(str(event.get("message") or "the trigger reported an error"))


def _described(event: Any) -> str:
    """An event for an error message: its keys and status, never its values (they might hold a URL)."""
    if isinstance(event, Mapping):
        return f"an event with keys {sorted(map(str, event))} and status {event.get('status')!r}"
    return f"a {type(event).__name__}, not an event dict"


def completed_request(hook: ReadsRequests, event: Any, **resolve: Any) -> dict[str, str | None]:
    """Resume from a :class:`WaitEvent`: the completed job's request dict (one GET), or raise.

    The event names the job; the request (with its signed ``output_url``) is fetched here, on the
    worker, so it never passes through the triggerer's log or the metadata database.

    :param resolve: passed to :func:`resolve_wait_event` (``timeout_error``).
    :raises ChamelaionError: the API no longer reports the job as completed.
    """
    request = hook.get_request(resolve_wait_event(event, **resolve))
    if request.outcome is not Outcome.SUCCEEDED:
        raise ChamelaionError(
            f"Chamelaion lip-sync request {request.id} was reported completed, but the API now says "
            f"{request.status!r}"
        )
    return request.to_dict()


def poll_once(
    hook: ReadsRequests,
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

    :param reporter: what a polling loop logs statuses through (one line per change, and "still
        waiting" lines); without it, the status is logged on every call.
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
    outcome = request.outcome
    if outcome is Outcome.SUCCEEDED:
        return request.to_dict()
    if outcome is Outcome.FAILED:
        raise LipsyncJobFailedError(request.id, request.error_message, request.status)
    if reporter is not None:  # a loop that polls again: status changes and "still waiting" lines
        reporter.report(request.status)
    elif report_status:
        log.info("Chamelaion lip-sync request %s is %s", request_id, request.status)
    return None
