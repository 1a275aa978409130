"""Operators: submit a lip-sync job (and optionally wait for it), download a finished job's output."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_chamelaion.events import LipsyncWaitTimeout, poll_once, resolve_wait_event
from airflow_provider_chamelaion.exceptions import (
    ChamelaionConfigError,
    ChamelaionNotFoundError,
    ChamelaionResponseError,
    ChamelaionServerError,
    ChamelaionTransportError,
)
from airflow_provider_chamelaion.links import LipsyncOutputLink
from airflow_provider_chamelaion.media import check_destination, check_filesystem, inspect_source
from airflow_provider_chamelaion.models import LipsyncRequest, Outcome
from airflow_provider_chamelaion.progress import WaitReporter
from airflow_provider_chamelaion.version_compat import BaseOperator, conf
from airflow_provider_chamelaion.wire import url_for_log, validate_http_url, validate_reference_id

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
    from airflow_provider_chamelaion.media import MediaDestination, MediaSource
    from airflow_provider_chamelaion.version_compat import Context, XComArg

XCOM_RETURN_KEY = "return_value"
XCOM_REQUEST_KEY = "request"
STATE_KEY = "chamelaion_submission"
#: Errors after which a POST may or may not have created a job: look before submitting again.
AMBIGUOUS_SUBMIT_ERRORS = (ChamelaionTransportError, ChamelaionServerError, ChamelaionResponseError)
#: How far before our own submission a job may appear to have been created (clock skew with the API).
CLOCK_SKEW = timedelta(minutes=5)


def derived_reference_id(context: Context) -> str:
    """A ``reference_id`` unique to the task instance (not to the try): what makes retries idempotent."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    parts = [ti.dag_id, ti.task_id, ti.run_id] + (
        [str(map_index)] if map_index is not None and map_index >= 0 else []
    )
    return "airflow-" + "-".join(part.replace("/", "_") for part in parts)


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class _SubmissionRecord:
    """This task instance's submission, kept in Airflow's task state store across tries.

    Best effort: where the store is unavailable the operator still dedups by ``reference_id``.
    """

    def __init__(self, context: Context, log: Any) -> None:
        self._store = context.get("task_state_store")
        self._log = log

    def load(self) -> dict[str, Any]:
        if self._store is None:
            return {}
        try:
            value = self._store.get(STATE_KEY)
        except Exception as err:
            self._log.warning("Could not read the task state store: %s", err)
            return {}
        return dict(value) if isinstance(value, dict) else {}

    def save(self, value: dict[str, Any]) -> None:
        if self._store is None:
            return
        try:
            self._store.set(STATE_KEY, value)
        except Exception as err:
            self._log.warning("Could not write the task state store: %s", err)


class LipsyncGenerateOperator(BaseOperator):
    """Submits a Chamelaion lip-sync job; optionally waits for it to finish.

    Give either both URLs (``POST /v1/lipsync/generate``) or both files (``POST
    /v1/lipsync/generate-with-media``, streamed). Everything is validated before any HTTP call.

    The request id is pushed to XCom ``return_value`` as soon as the job is submitted, before any wait.
    With ``wait_for_completion`` the task also waits (polling, or deferring to
    :class:`~airflow_provider_chamelaion.triggers.lipsync.LipsyncRequestTrigger`, exactly as
    :class:`~airflow_provider_chamelaion.sensors.lipsync.LipsyncRequestSensor` does), fails with the API's
    message and the request id if the job fails, and on success pushes the final request dict to XCom
    key ``request``.

    **Never paying twice.** In URL mode every job carries a ``reference_id``: yours, or one derived from
    the task instance (``airflow-<dag>-<task>-<run>[-<map index>]``). Before submitting, the operator
    reuses a job that is not ``failed`` when the ``reference_id`` is derived or
    ``reuse_existing_request=True``, or, with your own ``reference_id``, a job this task instance
    submitted in an earlier try (recorded in Airflow's task state store). When a POST may have reached
    the server but its answer was lost, the operator looks the job up before submitting again. Upload
    mode has no ``reference_id`` in the API: a retry reuses the job whose id an earlier try recorded,
    but a POST lost in flight cannot be checked and may be submitted again.

    :param video_url: http(s) URL of the video (templated).
    :param audio_url: http(s) URL of the audio (templated).
    :param video_file: local or object-storage path of the video to upload (templated).
    :param audio_file: local or object-storage path of the audio to upload (templated).
    :param reference_id: your identifier for the job, e.g. ``ep42-ja-{{ ds }}`` (templated; URL mode
        only: the upload endpoint does not take it).
    :param disable_active_speaker_detection: use max-face preprocessing (URL mode only).
    :param reuse_existing_request: reuse any job with this ``reference_id`` that has not failed (the
        newest, with a warning if there are several) instead of submitting.
    :param wait_for_completion: wait until the job has finished.
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :param poll_interval: seconds between status checks while waiting (default 30).
    :param timeout: how long to wait in all, in seconds or a ``timedelta`` (default 24 hours).
    :param chamelaion_conn_id: the Airflow connection (default ``chamelaion_default``).
    """

    template_fields: Sequence[str] = ("video_url", "audio_url", "video_file", "audio_file", "reference_id")
    ui_color = "#d5e8f5"
    operator_extra_links = (LipsyncOutputLink(),)
    #: Where the finished request dict is (read by the extra link).
    request_xcom_key = XCOM_REQUEST_KEY

    def __init__(
        self,
        *,
        video_url: str | None = None,
        audio_url: str | None = None,
        video_file: MediaSource | None = None,
        audio_file: MediaSource | None = None,
        reference_id: str | None = None,
        disable_active_speaker_detection: bool | None = None,
        reuse_existing_request: bool = False,
        wait_for_completion: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30,
        timeout: float | timedelta = timedelta(hours=24),
        chamelaion_conn_id: str = "chamelaion_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.video_url = video_url
        self.audio_url = audio_url
        self.video_file = video_file
        self.audio_file = audio_file
        self.reference_id = reference_id
        self.disable_active_speaker_detection = disable_active_speaker_detection
        self.reuse_existing_request = reuse_existing_request
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = float(poll_interval)
        self.timeout = _seconds(timeout)
        self.chamelaion_conn_id = chamelaion_conn_id
        self._check_arguments()

    def _check_arguments(self) -> None:
        """What can be checked before templates render: raised when the DAG file is parsed."""
        urls = {"video_url": self.video_url, "audio_url": self.audio_url}
        files = {"video_file": self.video_file, "audio_file": self.audio_file}
        given_urls = [name for name, value in urls.items() if value is not None]
        given_files = [name for name, value in files.items() if value is not None]
        if given_urls and given_files:
            raise ChamelaionConfigError(
                f"{self.task_id}: give either video_url and audio_url or video_file and audio_file, not both "
                f"(got {', '.join(given_urls + given_files)})"
            )
        given = given_urls or given_files
        if len(given) != 2:
            pair = urls if given_urls else files if given_files else None
            missing = [name for name in (pair or {}) if name not in given]
            raise ChamelaionConfigError(
                f"{self.task_id}: missing {missing[0]}: give both video_url and audio_url, or both "
                "video_file and audio_file"
                if missing
                else f"{self.task_id}: give video_url and audio_url (URL mode) or video_file and audio_file (upload mode)"
            )
        if given_files:
            unsupported = [
                name
                for name, value in (
                    ("reference_id", self.reference_id),
                    ("disable_active_speaker_detection", self.disable_active_speaker_detection),
                    ("reuse_existing_request", self.reuse_existing_request or None),
                )
                if value is not None
            ]
            if unsupported:
                raise ChamelaionConfigError(
                    f"{self.task_id}: {', '.join(unsupported)} cannot be used with video_file/audio_file: the API's "
                    "upload endpoint (generate-with-media) takes only the two files; use video_url/audio_url"
                )
        if self.reuse_existing_request and self.reference_id is None:
            raise ChamelaionConfigError(
                f"{self.task_id}: reuse_existing_request=True needs a reference_id (e.g. 'ep42-ja-{{{{ ds }}}}')"
            )
        if self.disable_active_speaker_detection not in (None, True, False):
            raise ChamelaionConfigError(
                f"{self.task_id}: disable_active_speaker_detection must be True, False or None"
            )
        if self.poll_interval <= 0 or self.timeout <= 0:
            raise ChamelaionConfigError(f"{self.task_id}: poll_interval and timeout must be positive")
        for name, value in files.items():
            # At parse time, templated or not: an object store this installation cannot read must not
            # get as far as a run (the scheme is literal even in 's3://dubs/{{ ds }}/42.mp4').
            check_filesystem(value, f"{self.task_id}: {name}")

    @property
    def upload_mode(self) -> bool:
        return self.video_file is not None

    @cached_property
    def hook(self) -> ChamelaionHook:
        from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

        return ChamelaionHook(self.chamelaion_conn_id)

    # -- submission -------------------------------------------------------------------------------

    def _validated_inputs(self, context: Context) -> str | None:
        """Check the rendered inputs (no HTTP); return the reference_id to use (None in upload mode)."""
        if self.upload_mode:
            inspect_source(self.video_file, "video_file")  # type: ignore[arg-type]
            inspect_source(self.audio_file, "audio_file")  # type: ignore[arg-type]
            return None
        self.video_url = validate_http_url(self.video_url, "video_url")
        self.audio_url = validate_http_url(self.audio_url, "audio_url")
        if self.reference_id is not None:
            return validate_reference_id(self.reference_id)
        return derived_reference_id(context)

    def _existing_request(self, reference_id: str, since: datetime | None) -> str | None:
        """The newest job with ``reference_id`` that has not failed (created after ``since``, if given)."""
        candidates = [
            request
            for request in self.hook.find_requests(reference_id)
            if request.outcome is not Outcome.FAILED
        ]
        if since is not None:
            candidates = [
                r
                for r in candidates
                if (created := _parse_time(r.created_at)) is None or created >= since - CLOCK_SKEW
            ]
        if not candidates:
            return None
        if len(candidates) > 1:
            self.log.warning(
                "%d requests have reference_id %r and have not failed; reusing the newest, %s",
                len(candidates),
                reference_id,
                candidates[0].id,
            )
        chosen = candidates[0]
        self.log.info(
            "Reusing Chamelaion request %s (reference_id %r, status %s)",
            chosen.id,
            reference_id,
            chosen.status,
        )
        return chosen.id

    def _prior_request(self, record: dict[str, Any]) -> str | None:
        """The job an earlier try of this task instance submitted, if it has not failed."""
        request_id = record.get("request_id")
        if not request_id:
            return None
        try:
            request: LipsyncRequest = self.hook.get_request(request_id)
        except ChamelaionNotFoundError:
            return None
        if request.outcome is Outcome.FAILED:
            self.log.warning(
                "The earlier try's request %s failed (%s); submitting a new one",
                request.id,
                request.error_message,
            )
            return None
        self.log.info(
            "Reusing request %s submitted by an earlier try (status %s)", request.id, request.status
        )
        return request.id

    def _post(self, reference_id: str | None) -> str:
        if self.upload_mode:
            return self.hook.generate_with_media(self.video_file, self.audio_file)  # type: ignore[arg-type]
        return self.hook.generate(
            self.video_url,  # type: ignore[arg-type]
            self.audio_url,  # type: ignore[arg-type]
            reference_id=reference_id,
            disable_active_speaker_detection=self.disable_active_speaker_detection,
        )

    def _submit(self, reference_id: str | None, started: datetime) -> str:
        """POST once; if the answer was lost, look for the job before POSTing again (URL mode)."""
        attempts = self.hook.retry_policy.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return self._post(reference_id)
            except AMBIGUOUS_SUBMIT_ERRORS as err:
                if reference_id is None:
                    raise
                self.log.warning(
                    "Submission may or may not have reached Chamelaion (%s); checking by reference_id", err
                )
                # Checked after every lost answer, the last one included: that POST may have created
                # (and billed) the job, which must not fail the task or be submitted again by a retry.
                # The backoff wait first gives a slow server time to make the job visible.
                policy = self.hook.retry_policy
                policy.sleep(policy.wait_before_retry(err, attempt))
                existing = self._existing_request(reference_id, since=started)
                if existing is not None:
                    return existing
                if attempt == attempts:
                    raise
                self.log.warning(
                    "No job was created; submitting again (attempt %d of %d)", attempt + 1, attempts
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def submit_or_reuse(self, context: Context) -> str:
        """Validate, then return the id of this task instance's job, submitting one only if needed."""
        reference_id = self._validated_inputs(context)
        store = _SubmissionRecord(context, self.log)
        record = store.load()
        if (prior := self._prior_request(record)) is not None:
            return prior
        if reference_id is not None:
            trust_any = self.reuse_existing_request or self.reference_id is None
            since = None if trust_any else _parse_time(record.get("submitted_at"))
            lookup = trust_any or since is not None
            if lookup and (existing := self._existing_request(reference_id, since)) is not None:
                store.save({"request_id": existing, "reference_id": reference_id})
                return existing
        started = datetime.now(timezone.utc)
        store.save({"reference_id": reference_id, "submitted_at": started.isoformat()})
        request_id = self._submit(reference_id, started)
        store.save(
            {"request_id": request_id, "reference_id": reference_id, "submitted_at": started.isoformat()}
        )
        self.log.info("Chamelaion lip-sync request %s submitted (reference_id %s)", request_id, reference_id)
        return request_id

    # -- execution --------------------------------------------------------------------------------

    def execute(self, context: Context) -> str:
        request_id = self.submit_or_reuse(context)
        self._lineage_request_id = request_id
        context["ti"].xcom_push(key=XCOM_RETURN_KEY, value=request_id)
        if not self.wait_for_completion:
            return request_id
        if self.deferrable:
            from airflow_provider_chamelaion.triggers.lipsync import LipsyncRequestTrigger

            self.defer(
                trigger=LipsyncRequestTrigger(
                    request_id=request_id,
                    chamelaion_conn_id=self.chamelaion_conn_id,
                    poll_interval=self.poll_interval,
                    end_time=time.time() + self.timeout,
                ),
                method_name="execute_complete",
            )
        return self._finish(context, self._wait(request_id))

    def _wait(self, request_id: str) -> dict[str, str | None]:
        deadline = time.monotonic() + self.timeout
        reporter = WaitReporter(request_id, self.log)
        while (request := poll_once(self.hook, request_id, self.log, reporter)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LipsyncWaitTimeout(
                    f"Chamelaion lip-sync request {request_id} did not finish within {self.timeout:.0f} s"
                )
            time.sleep(min(self.poll_interval, remaining))
        return request

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume after the trigger fired; needs nothing but ``event`` (``dag.test()`` passes only that)."""
        return self._finish(context, resolve_wait_event(event))

    def _finish(self, context: Context, request: dict[str, str | None]) -> str:
        self._lineage_request_id = str(request["id"])
        context["ti"].xcom_push(key=XCOM_REQUEST_KEY, value=request)
        self.log.info(
            "Chamelaion lip-sync request %s completed: %s",
            request.get("id"),
            url_for_log(request.get("output_url")),
        )
        return str(request["id"])

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the input media (URLs or files) in, the lip-sync job out (see :mod:`..lineage`)."""
        from airflow_provider_chamelaion import lineage

        sources = (self.video_file, self.audio_file) if self.upload_mode else (self.video_url, self.audio_url)
        request_id = getattr(self, "_lineage_request_id", None)
        if request_id is None:  # pragma: no cover - Airflow calls this only after execute succeeded
            return lineage.operator_lineage([lineage.media_dataset(s) for s in sources], [])
        return lineage.operator_lineage(
            inputs=[lineage.media_dataset(source) for source in sources],
            outputs=[lineage.job_dataset(self.hook.get_settings().base_url, request_id)],
            run_facets=lineage.job_run_facets(request_id),
        )


class LipsyncDownloadOperator(BaseOperator):
    """Downloads a completed lip-sync request's output, streamed and atomically.

    :param request_id: request UUID or ``reference_id`` (templated), e.g. ``generate.output``.
    :param destination: a local or object-storage file path (templated); an existing directory, or a
        path ending in ``/``, gets the output's own file name. Nothing is left there if the download fails.
    :param chamelaion_conn_id: the Airflow connection (default ``chamelaion_default``).
    :param asset: declare the output as an Airflow asset (``Dataset`` on Airflow 2), so DAGs scheduled on
        it run when a new output lands: an ``Asset`` of yours (for a templated destination), or ``True``
        for one made of a fixed ``destination``. Each event's ``extra`` holds the ``path`` written and
        the ``request_id``.
    :return: the path written, as a string (XCom ``return_value``).
    """

    template_fields: Sequence[str] = ("request_id", "destination")
    ui_color = "#d5f5e0"

    def __init__(
        self,
        *,
        request_id: str | XComArg,
        destination: MediaDestination,
        chamelaion_conn_id: str = "chamelaion_default",
        asset: Any = None,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_chamelaion.assets import destination_asset

        self.asset = destination_asset(asset, destination, kwargs.get("task_id", "download"))
        if self.asset is not None:
            kwargs["outlets"] = [*(kwargs.get("outlets") or []), self.asset]
        super().__init__(**kwargs)
        self.request_id = request_id
        self.destination = destination
        self.chamelaion_conn_id = chamelaion_conn_id
        # At parse time: a destination this installation cannot write fails the DAG import, so no run
        # (and no upstream generate task) pays for a job whose output could not be saved. The rendered
        # value is checked again when the task starts.
        check_filesystem(destination, f"{self.task_id}: destination")

    @cached_property
    def hook(self) -> ChamelaionHook:
        from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

        return ChamelaionHook(self.chamelaion_conn_id)

    def execute(self, context: Context) -> str:
        request_id = validate_reference_id(self.request_id, "request_id")
        check_destination(self.destination)
        request = self.hook.get_request(request_id)  # by id or reference_id: lineage needs the real id
        written = self.hook.download_output(request, self.destination)
        self._lineage = (request.id, written)
        if self.asset is not None:
            # The consumer reads which file landed from the asset event (inlet_events / triggering events).
            context["outlet_events"][self.asset].extra = {"path": str(written), "request_id": request.id}
        return str(written)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the lip-sync job in, the file written out (see :mod:`..lineage`)."""
        from airflow_provider_chamelaion import lineage

        request_id, written = self._lineage
        return lineage.operator_lineage(
            inputs=[lineage.job_dataset(self.hook.get_settings().base_url, request_id)],
            outputs=[lineage.media_dataset(written)],
            run_facets=lineage.job_run_facets(request_id),
        )
