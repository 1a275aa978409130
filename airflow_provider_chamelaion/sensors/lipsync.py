"""LipsyncRequestSensor: wait until a lip-sync request has finished."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_chamelaion.client.wire import url_for_log, validate_reference_id
from airflow_provider_chamelaion.exceptions import LipsyncJobFailedError
from airflow_provider_chamelaion.operators.common import (
    DEFAULT_CONN_ID,
    ChamelaionHookMixin,
    check_hook_params,
    check_positive,
    seconds,
)
from airflow_provider_chamelaion.utils.links import LipsyncOutputLink
from airflow_provider_chamelaion.utils.progress import STILL_WAITING_EVERY, WaitReporter
from airflow_provider_chamelaion.utils.waiting import completed_request, is_stale, poll_once
from airflow_provider_chamelaion.version_compat import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

#: What ``soft_fail`` turns into a skip, in every mode: the job failed, or the wait timed out.
SOFT_FAILURES = (AirflowFailException, AirflowSensorTimeout)

if TYPE_CHECKING:
    from airflow_provider_chamelaion.version_compat import Context, XComArg


class LipsyncRequestSensor(ChamelaionHookMixin, BaseSensorOperator):
    """Waits for a Chamelaion lip-sync request to finish.

    Succeeds when the request is ``completed`` and returns the request as a dict (XCom
    ``return_value``, with ``output_url``). Fails when it is ``failed``, with the API's message and the
    request id (no task retry: polling a failed job again cannot help; ``soft_fail`` skips instead).
    Keeps waiting on any other status, and through transient API errors.

    Works in ``poke`` and ``reschedule`` modes and deferrable: then the first poke returns at once if
    the request has already finished, and otherwise defers to
    :class:`~airflow_provider_chamelaion.triggers.lipsync.LipsyncRequestTrigger` with an absolute deadline
    of now + ``timeout``; the trigger's event names the job, and the resumed task fetches the request
    (one GET), so its signed ``output_url`` never passes through the triggerer. A timeout raises ``AirflowSensorTimeout`` in every mode. ``soft_fail`` skips
    the task on a failed job or a timeout, in every mode; configuration and outage errors (a revoked
    key, an unknown id, the API unreachable for 10 polls in a row) fail it in every mode.

    .. seealso::
        :class:`~airflow_provider_chamelaion.operators.lipsync.LipsyncGenerateOperator` with
        ``wait_for_completion=True`` waits the same way, through the same trigger.

    :param request_id: a request UUID or a ``reference_id`` (templated).
    :param chamelaion_conn_id: the Airflow connection (default ``chamelaion_default``).
    :param hook_params: hook arguments (``max_attempts``, ``timeout``, ``download_timeout``), for the
        pokes and for the wait in the triggerer alike.
    :param deferrable: wait in the triggerer instead of a worker slot (default: ``[operators]
        default_deferrable``).
    :param poke_interval: seconds between polls in every mode (default 30).
    :param timeout: seconds to wait in all before timing out (default 7 days).
    :param still_waiting_interval: how often to log a "still waiting" line while the status has not
        changed, in seconds or a ``timedelta`` (default 5 minutes; the first comes 30 seconds into a
        status), in ``poke`` and deferrable modes (``reschedule`` mode logs the status every poke).
    """

    template_fields: Sequence[str] = ("request_id",)
    ui_color = "#e8d5f5"
    operator_extra_links = (LipsyncOutputLink(),)
    #: Where the finished request dict is (read by the extra link).
    request_xcom_key = "return_value"

    def __init__(
        self,
        *,
        request_id: str | XComArg,
        chamelaion_conn_id: str = DEFAULT_CONN_ID,
        hook_params: dict[str, Any] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: float = 30,
        still_waiting_interval: float | timedelta = STILL_WAITING_EVERY,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.request_id = request_id
        self.chamelaion_conn_id = chamelaion_conn_id
        self.hook_params = check_hook_params(self.task_id, hook_params)
        self.deferrable = deferrable
        self.still_waiting_interval = seconds(still_waiting_interval)
        check_positive(self.task_id, still_waiting_interval=self.still_waiting_interval)
        #: The finished request once this try has it: what the extra link shows (see links.py).
        self.output_request: dict[str, str | None] | None = None

    def _wait_reporter(self, request_id: str) -> WaitReporter:
        """One per wait: in ``poke`` mode pokes share it, so unchanged statuses are not logged each time.

        (``reschedule`` mode starts each poke afresh and logs the status every poke.)
        """
        reporter = getattr(self, "_reporter", None)
        if reporter is None or reporter.request_id != request_id:
            reporter = self._reporter = WaitReporter(request_id, self.log, every=self.still_waiting_interval)
        return reporter

    def execute(self, context: Context) -> Any:
        self.output_request = None
        return super().execute(context)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        request_id = validate_reference_id(self.request_id, "request_id")
        try:
            if self.deferrable:  # the one look before deferring: the trigger reports the status
                request = poll_once(self.hook, request_id, self.log, report_status=False)
            else:
                request = poll_once(self.hook, request_id, self.log, self._wait_reporter(request_id))
        except LipsyncJobFailedError as err:
            raise AirflowFailException(str(err)) from err
        if request is not None:
            self.output_request = request
            return PokeReturnValue(is_done=True, xcom_value=request)
        if self.deferrable:
            # Raised out of BaseSensorOperator.execute (TaskDeferred is not an Exception), which also
            # gives the first look its soft_fail handling.
            self.defer(
                trigger=self.wait_trigger(
                    request_id,
                    poll_interval=self.poke_interval,
                    timeout=self.timeout,
                    still_waiting_interval=self.still_waiting_interval,
                    try_number=getattr(context["ti"], "try_number", None),
                ),
                method_name="execute_complete",
            )
        return False

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """BaseSensorOperator's resume, with ``soft_fail`` narrowed to what it means in poke mode.

        On resume Airflow turns *every* ``AirflowException`` into a skip under ``soft_fail``, whereas
        poke mode skips only a failure or a timeout. Here too only a failed job
        (``AirflowFailException``) or a timeout (``AirflowSensorTimeout``) is skipped; a configuration
        or outage error from the trigger (a revoked key, an unknown id, the API down) fails the task.
        ``never_fail`` still skips everything, as documented by Airflow.
        """
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except AirflowSkipException as skip:
            cause = skip.__cause__
            if self.soft_fail and cause is not None and not isinstance(cause, SOFT_FAILURES):
                raise cause from None
            raise

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None
    ) -> dict[str, str | None]:
        """Resume after the trigger fired; needs nothing but ``event`` (``dag.test()`` passes only that).

        The event names the job; its request (with the signed ``output_url``) is fetched here: one GET. An
        earlier try's event (Airflow 3.0 retries a deferred task here) starts this try over at ``execute``.
        """
        if is_stale(event, context):
            self.log.warning("This try was handed an earlier try's event; starting over")
            return self.execute(context)
        try:
            request = completed_request(self.hook, event, timeout_error=AirflowSensorTimeout)
        except LipsyncJobFailedError as err:
            raise AirflowFailException(str(err)) from err
        self.output_request = request
        self.log.info(
            "Chamelaion lip-sync request %s completed: %s",
            request.get("id"),
            url_for_log(request.get("output_url")),
        )
        return request


__all__ = ["LipsyncRequestSensor"]
