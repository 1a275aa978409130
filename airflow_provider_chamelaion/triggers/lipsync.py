"""LipsyncRequestTrigger: waits on a lip-sync request in the triggerer, async end to end."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow_provider_chamelaion.client.models import LipsyncRequest
from airflow_provider_chamelaion.client.settings import DEFAULT_CONN_ID
from airflow_provider_chamelaion.exceptions import ChamelaionAPIError, ChamelaionConfigError, is_permanent
from airflow_provider_chamelaion.utils.progress import STILL_WAITING_EVERY, WaitReporter
from airflow_provider_chamelaion.utils.waiting import WaitEvent, error_event, event_for_request, timeout_event
from airflow_provider_chamelaion.version_compat import BaseTrigger, TriggerEvent


class LipsyncRequestTrigger(BaseTrigger):
    """Polls ``GET /v1/lipsync/requests/{id}`` until the request finishes, then yields one event.

    The event's payload is a :class:`~airflow_provider_chamelaion.utils.waiting.WaitEvent`: ``status`` is
    ``completed``, ``failed``, ``timeout`` or ``error``, with the job's id, its last status, the API's
    error message and a sentence for the log. Never the request's signed ``output_url``: Airflow logs
    every event and stores it in the task instance's row, so the resuming task fetches the request
    itself. Transient errors (connection errors, timeouts, 429, 5xx: each poll already retries them
    per the hook's policy) do not end the wait until ``max_consecutive_errors`` polls in a row have
    failed; permanent ones (401/403, 404, 422, a bad connection) end it at once. Unknown statuses are
    polled through.

    While the job's status stays the same it logs "still waiting" lines (see
    :class:`~airflow_provider_chamelaion.utils.progress.WaitReporter`).

    Only JSON primitives are serialized: the connection id (never the key), the request id, the poll
    interval, an absolute deadline (so a triggerer restart does not reset the countdown) and the
    intervals of error budget and "still waiting" lines.

    :param request_id: request UUID or ``reference_id``.
    :param chamelaion_conn_id: the Airflow connection.
    :param poll_interval: seconds between polls.
    :param end_time: UNIX time after which the wait ends with a ``timeout`` event; ``None`` waits forever.
    :param max_consecutive_errors: transient failed polls in a row that end the wait with ``error``.
    :param still_waiting_interval: seconds between "still waiting" lines while the status stays the same.
    :param hook_params: the deferring task's ``hook_params`` (timeouts, attempts), for the trigger's hook.
    :param try_number: the try that deferred, echoed in the event (see :func:`~airflow_provider_chamelaion.utils.waiting.is_stale`).
    """

    def __init__(
        self,
        request_id: str,
        chamelaion_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 30.0,
        end_time: float | None = None,
        max_consecutive_errors: int = 10,
        still_waiting_interval: float = STILL_WAITING_EVERY,
        hook_params: dict[str, Any] | None = None,
        try_number: int | None = None,
    ) -> None:
        super().__init__()
        self.request_id = request_id
        self.chamelaion_conn_id = chamelaion_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = None if end_time is None else float(end_time)
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.still_waiting_interval = float(still_waiting_interval)
        self.hook_params = dict(hook_params or {})
        self.try_number = try_number

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request_id": self.request_id,
                "chamelaion_conn_id": self.chamelaion_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "max_consecutive_errors": self.max_consecutive_errors,
                "still_waiting_interval": self.still_waiting_interval,
                "hook_params": self.hook_params,
                "try_number": self.try_number,
            },
        )

    def _hook(self) -> Any:
        # Imported here so that loading the trigger class (the triggerer does it for every trigger
        # row) does not pay for requests and the hook until a trigger actually runs.
        from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

        return ChamelaionHook(self.chamelaion_conn_id, **self.hook_params)

    def _fired(self, event: WaitEvent) -> TriggerEvent:
        return TriggerEvent({**event, "try_number": self.try_number})

    def _first_poll_delay(self) -> float:
        """A random part of one poll interval (never past the deadline) to wait before the first poll.

        A triggerer hands over many triggers at once (when it starts, or a batch of deferrals): started
        together, they would poll together for ever, and the event loop would serve them in bursts
        that delay every other trigger. The request was looked at just before deferring, so the first
        poll has no reason to come sooner than any later one.
        """
        delay = random.uniform(0, self.poll_interval)
        return delay if self.end_time is None else max(0.0, min(delay, self.end_time - time.time()))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self._hook()
        last: LipsyncRequest | None = None
        # Status changes, and "still waiting" lines while a status lasts.
        reporter = WaitReporter(self.request_id, self.log, every=self.still_waiting_interval)
        failures = 0
        try:
            await asyncio.sleep(self._first_poll_delay())
            # One client for the whole wait, on a session shared by every trigger on this event loop.
            async with hook.shared_async_client() as client:
                while True:
                    try:
                        last = await hook.aget_request(self.request_id, client=client)
                    except (ChamelaionAPIError, ChamelaionConfigError) as err:
                        failures += 1
                        self.log.warning(
                            "Poll %d (of at most %d in a row) failed for %s: %s",
                            failures,
                            self.max_consecutive_errors,
                            self.request_id,
                            err,
                        )
                        if is_permanent(err) or failures >= self.max_consecutive_errors:
                            yield self._fired(error_event(self.request_id, err, last))
                            return
                    else:
                        failures = 0
                        event = event_for_request(last, self.request_id)
                        if event is not None:
                            yield self._fired(event)
                            return
                        reporter.report(last.status)
                    remaining = None if self.end_time is None else self.end_time - time.time()
                    if remaining is not None and remaining <= 0:
                        yield self._fired(timeout_event(self.request_id, last, self.end_time))
                        return
                    await asyncio.sleep(
                        self.poll_interval if remaining is None else min(self.poll_interval, remaining)
                    )
        except Exception as err:  # a bug or an unexpected failure still ends in exactly one event
            self.log.exception("Waiting on %s failed unexpectedly", self.request_id)
            yield self._fired(error_event(self.request_id, err, last))


__all__ = ["LipsyncRequestTrigger"]
