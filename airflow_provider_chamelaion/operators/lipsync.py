"""Operators: submit a lip-sync job (and optionally wait for it), download a finished job's output."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_provider_chamelaion.client.inputs import OPTIONS, JobInputs
from airflow_provider_chamelaion.client.media import check_destination, check_filesystem, inspect_source
from airflow_provider_chamelaion.client.models import LipsyncRequest, Outcome
from airflow_provider_chamelaion.client.wire import url_for_log, validate_reference_id
from airflow_provider_chamelaion.exceptions import (
    ChamelaionConfigError,
    ChamelaionNotFoundError,
    LipsyncWaitTimeout,
)
from airflow_provider_chamelaion.operators.common import (
    DEFAULT_CONN_ID,
    ChamelaionHookMixin,
    check_hook_params,
    check_positive,
    seconds,
)
from airflow_provider_chamelaion.utils.job_identity import (
    Submission,
    SubmissionStore,
    derived_reference_id,
    digest,
    source_identity,
)
from airflow_provider_chamelaion.utils.links import LipsyncOutputLink
from airflow_provider_chamelaion.utils.progress import STILL_WAITING_EVERY, WaitReporter
from airflow_provider_chamelaion.utils.waiting import completed_request, is_stale, poll_once
from airflow_provider_chamelaion.version_compat import BaseOperator, conf

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_chamelaion.client.media import MediaDestination, MediaSource
    from airflow_provider_chamelaion.version_compat import Context, XComArg

XCOM_RETURN_KEY = "return_value"
XCOM_REQUEST_KEY = "request"


class _Job(NamedTuple):
    """This task instance's job, and whether it existed before this try (reused) or was just submitted."""

    request_id: str
    reused: bool


class LipsyncGenerateOperator(ChamelaionHookMixin, BaseOperator):
    """Submits a Chamelaion lip-sync job; optionally waits for it to finish.

    Give either both URLs (``POST /v1/lipsync/generate``) or both files (``POST
    /v1/lipsync/generate-with-media``, streamed). Everything is validated before any HTTP call.

    The request id is pushed to XCom ``return_value`` as soon as the job is submitted, before any wait.
    With ``wait_for_completion`` the task also waits (polling, or deferring to
    :class:`~airflow_provider_chamelaion.triggers.lipsync.LipsyncRequestTrigger`, exactly as
    :class:`~airflow_provider_chamelaion.sensors.lipsync.LipsyncRequestSensor` does), fails with the API's
    message and the request id if the job fails, and on success pushes the final request dict to XCom
    key ``request`` (with the signed ``output_url``; the trigger's event carries only the id, and the
    resumed task fetches the request). Only a task that waits shows the "Lip-sync output" extra link.

    **Never paying twice.** In URL mode every job carries a ``reference_id``: yours, or one derived from
    the task instance and its inputs (``airflow-<dag_id>.<task_id>-<digest>``, see
    :func:`~airflow_provider_chamelaion.utils.job_identity.derived_reference_id`). Before submitting, the
    operator reuses a job that is not ``failed`` when the ``reference_id`` is derived or
    ``reuse_existing_request=True``; with your own ``reference_id`` it reuses only a job this task
    instance submitted in an earlier try with the same ``reference_id`` and inputs (recorded in
    Airflow's task state store). When a POST may have reached the server but its answer was lost, the
    operator looks the job up before submitting again, recognising it by the ids that already had the
    ``reference_id`` before the first POST, never by comparing clocks. Upload mode has no
    ``reference_id`` in the API: a retry reuses the job an earlier try recorded for the same files,
    but a POST lost in flight cannot be checked and may be submitted again.

    :param video_url: http(s) URL of the video (templated).
    :param audio_url: http(s) URL of the audio (templated).
    :param video_file: local or object-storage path of the video to upload (templated).
    :param audio_file: local or object-storage path of the audio to upload (templated).
    :param reference_id: your identifier for the job, e.g. ``ep42-ja-{{ ds }}`` (templated; URL mode
        only: the upload endpoint does not take it). Without it, one is derived from the task instance,
        the inputs and the connection's ``reference_namespace``.
    :param disable_active_speaker_detection: use max-face preprocessing (URL mode only; part of the
        inputs' identity).
    :param reuse_existing_request: reuse any job with this ``reference_id`` that has not failed (the
        newest, with a warning if there are several) instead of submitting.
    :param wait_for_completion: wait until the job has finished.
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``). A reused job
        is looked at once first, so one that has already finished costs no trigger.
    :param poll_interval: seconds between status checks while waiting (default 30).
    :param timeout: how long to wait in all, in seconds or a ``timedelta`` (default 24 hours).
    :param still_waiting_interval: while waiting, how often to log a "still waiting" line when the
        status has not changed, in seconds or a ``timedelta`` (default 5 minutes; the first comes 30
        seconds into a status).
    :param chamelaion_conn_id: the Airflow connection (default ``chamelaion_default``).
    :param hook_params: hook arguments (``max_attempts``, ``timeout``, ``download_timeout``), for the
        task's calls and for its wait in the triggerer alike.
    """

    template_fields: Sequence[str] = ("video_url", "audio_url", "video_file", "audio_file", "reference_id")
    ui_color = "#d5e8f5"
    #: Offered by every task of a mapped operator (Airflow reads a mapped task's links from the class);
    #: a task that does not wait has no output to link to, so ``__init__`` offers it only to those that do.
    operator_extra_links: tuple[LipsyncOutputLink, ...] = (LipsyncOutputLink(),)
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
        still_waiting_interval: float | timedelta = STILL_WAITING_EVERY,
        chamelaion_conn_id: str = DEFAULT_CONN_ID,
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hook_params = check_hook_params(self.task_id, hook_params)
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
        self.timeout = seconds(timeout)
        self.still_waiting_interval = seconds(still_waiting_interval)
        self.chamelaion_conn_id = chamelaion_conn_id
        if not wait_for_completion:  # no output to link to: no (empty) "Extra Links" in the UI
            self.operator_extra_links = ()
        #: The finished request once this try has it: what the extra link shows (see links.py).
        self.output_request: dict[str, str | None] | None = None
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
        for option in self._options():
            # Not templated, so checked as given: an option of the wrong type fails the DAG import.
            _, problems = JobInputs.check({option: getattr(self, option)})
            problems = [problem for problem in problems if problem.startswith(option)]
            if problems:
                raise ChamelaionConfigError(f"{self.task_id}: {problems[0]}")
        check_positive(
            self.task_id,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
            still_waiting_interval=self.still_waiting_interval,
        )
        for name, value in files.items():
            # At parse time, templated or not: an object store this installation cannot read must not
            # get as far as a run (the scheme is literal even in 's3://dubs/{{ ds }}/42.mp4').
            check_filesystem(value, f"{self.task_id}: {name}")

    @property
    def upload_mode(self) -> bool:
        return self.video_file is not None

    def _options(self) -> dict[str, Any]:
        """The API options this operator was given (see :data:`..client.inputs.OPTIONS`)."""
        return {name: getattr(self, name) for name in OPTIONS}

    # -- submission -------------------------------------------------------------------------------

    def _validated_inputs(self, context: Context) -> tuple[JobInputs | None, str]:
        """Check the rendered inputs (no HTTP call): the job's inputs with the ``reference_id`` to use
        (``None`` in upload mode), and the digest of what identifies them."""
        if self.upload_mode:
            video = inspect_source(self.video_file, "video_file")  # type: ignore[arg-type]
            audio = inspect_source(self.audio_file, "audio_file")  # type: ignore[arg-type]
            files = {
                "video_file": source_identity(self.video_file, video),  # type: ignore[arg-type]
                "audio_file": source_identity(self.audio_file, audio),  # type: ignore[arg-type]
            }
            return None, digest(files)
        inputs = JobInputs.of(
            video_url=self.video_url,
            audio_url=self.audio_url,
            reference_id=self.reference_id,
            **self._options(),
        )
        identity = inputs.identity()
        if inputs.reference_id is None:
            ti = context["ti"]
            inputs = inputs.replace(
                reference_id=derived_reference_id(
                    dag_id=ti.dag_id,
                    task_id=ti.task_id,
                    run_id=ti.run_id,
                    map_index=getattr(ti, "map_index", -1),
                    inputs=identity,
                    namespace=self.hook.get_settings().reference_namespace,
                )
            )
        return inputs, digest(identity)

    def _newest_live(
        self, reference_id: str, *, excluding: frozenset[str] = frozenset()
    ) -> LipsyncRequest | None:
        """The newest job with ``reference_id`` that has not failed and is not in ``excluding``."""
        candidates = [
            request
            for request in self.hook.find_requests(reference_id)
            if request.outcome is not Outcome.FAILED and request.id not in excluding
        ]
        if len(candidates) > 1:
            self.log.warning(
                "%d requests have reference_id %r and have not failed; reusing the newest, %s",
                len(candidates),
                reference_id,
                candidates[0].id,
            )
        return candidates[0] if candidates else None

    def _still_usable(self, request_id: str) -> bool:
        """Whether the job an earlier try recorded still exists and has not failed."""
        try:
            request: LipsyncRequest = self.hook.get_request(request_id)
        except ChamelaionNotFoundError:
            self.log.warning(
                "The earlier try's request %s is unknown to the API; submitting anew", request_id
            )
            return False
        if request.outcome is Outcome.FAILED:
            self.log.warning(
                "The earlier try's request %s failed (%s); submitting a new one",
                request.id,
                request.error_message,
            )
            return False
        self.log.info(
            "Reusing request %s submitted by an earlier try (status %s)", request.id, request.status
        )
        return True

    def submit_or_reuse(self, context: Context) -> str:
        """Validate, then return the id of this task instance's job, submitting one only if needed."""
        return self._submit_or_reuse(context).request_id

    def _submit_or_reuse(self, context: Context) -> _Job:
        inputs, identity = self._validated_inputs(context)
        reference_id = None if inputs is None else inputs.reference_id
        store = SubmissionStore(context, self.log)
        earlier = store.load(reference_id, identity)
        if earlier is not None and earlier.request_id is not None:
            if self._still_usable(earlier.request_id):
                return _Job(earlier.request_id, reused=True)
            earlier = None
        if inputs is None:  # upload mode: nothing to look up by
            request_id = self.hook.generate_with_media(self.video_file, self.audio_file)  # type: ignore[arg-type]
            store.save(Submission(None, identity, request_id))
            return _Job(request_id, reused=False)
        not_ours = self._jobs_not_ours(earlier)
        if not_ours is not None and (existing := self._reusable(inputs, not_ours, store, identity)):
            return _Job(existing, reused=True)
        return _Job(self._submit(inputs, identity, store, not_ours), reused=False)

    def _jobs_not_ours(self, earlier: Submission | None) -> frozenset[str] | None:
        """The reuse policy: which existing jobs with the ``reference_id`` are *not* this task instance's
        work (an empty set: any job that has not failed is; ``None``: none can be yet).

        With a derived ``reference_id`` (unique to the task instance and its inputs) or
        ``reuse_existing_request``, any job that has not failed is. With the user's own ``reference_id``,
        which may be used across runs on purpose, only a job whose id was not known before this task
        instance's first POST: without a record of that POST, none can exist yet.
        """
        if self.reuse_existing_request or self.reference_id is None:
            return frozenset()
        return None if earlier is None else frozenset(earlier.known_ids)

    def _reusable(
        self, inputs: JobInputs, not_ours: frozenset[str], store: SubmissionStore, identity: str
    ) -> str | None:
        """The id of this task instance's existing job, recorded for the next try; ``None`` if none."""
        existing = self._newest_live(str(inputs.reference_id), excluding=not_ours)
        if existing is None:
            return None
        self.log.info(
            "Reusing Chamelaion request %s (reference_id %r, status %s)",
            existing.id,
            inputs.reference_id,
            existing.status,
        )
        store.save(Submission(inputs.reference_id, identity, existing.id, tuple(sorted(not_ours))))
        return existing.id

    def _submit(
        self, inputs: JobInputs, identity: str, store: SubmissionStore, not_ours: frozenset[str] | None
    ) -> str:
        """POST the job, having recorded which ids existed before it, so a lost answer is looked up (never
        compared by clock) before anything is sent again."""
        reference_id = str(inputs.reference_id)
        known = (
            not_ours
            if not_ours is not None
            else frozenset(
                r.id for r in self.hook.find_requests(reference_id) if r.outcome is not Outcome.FAILED
            )
        )
        record = Submission(reference_id, identity, known_ids=tuple(sorted(known)))
        store.save(record)  # before the POST: a retry after a lost answer knows what was there before

        def find_lost_job(error: BaseException) -> str | None:
            found = self._newest_live(reference_id, excluding=known)
            if found is not None:
                self.log.info(
                    "The lost submission created request %s (reference_id %r); not submitting again",
                    found.id,
                    reference_id,
                )
            return None if found is None else found.id

        request_id = self.hook.submit(inputs, reconcile=find_lost_job)
        store.save(Submission(reference_id, identity, request_id, record.known_ids))
        return request_id

    # -- execution --------------------------------------------------------------------------------

    def execute(self, context: Context) -> str:
        self.output_request = None
        request_id, reused = self._submit_or_reuse(context)
        self._lineage_request_id = request_id
        context["ti"].xcom_push(key=XCOM_RETURN_KEY, value=request_id)
        if not self.wait_for_completion:
            return request_id
        if self.deferrable:
            # A reused job may have finished already: look once so it costs no trigger. A job just
            # submitted cannot have, so it is not polled from the worker at all.
            if reused and (request := poll_once(self.hook, request_id, self.log, report_status=False)):
                return self._finish(context, request)
            self.defer(
                trigger=self.wait_trigger(
                    request_id,
                    poll_interval=self.poll_interval,
                    timeout=self.timeout,
                    still_waiting_interval=self.still_waiting_interval,
                    try_number=getattr(context["ti"], "try_number", None),
                ),
                method_name="execute_complete",
            )
        return self._finish(context, self._wait(request_id))

    def _wait(self, request_id: str) -> dict[str, str | None]:
        deadline = time.monotonic() + self.timeout
        reporter = WaitReporter(request_id, self.log, every=self.still_waiting_interval)
        while (request := poll_once(self.hook, request_id, self.log, reporter)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LipsyncWaitTimeout(
                    f"Chamelaion lip-sync request {request_id} did not finish within {self.timeout:.0f} s"
                )
            time.sleep(min(self.poll_interval, remaining))
        return request

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume after the trigger fired; needs nothing but ``event`` (``dag.test()`` passes only that).

        The event names the job; its request (with the signed ``output_url``) is fetched here: one GET. An
        earlier try's event (Airflow 3.0 retries a deferred task here) starts this try over at ``execute``:
        a live job is reused, a failed one submitted again, as on every other line.
        """
        if is_stale(event, context):
            self.log.warning("This try was handed an earlier try's event; starting over")
            return self.execute(context)
        return self._finish(context, completed_request(self.hook, event))

    def _finish(self, context: Context, request: dict[str, str | None]) -> str:
        self._lineage_request_id = str(request["id"])
        context["ti"].xcom_push(key=XCOM_REQUEST_KEY, value=request)
        self.output_request = request
        self.log.info(
            "Chamelaion lip-sync request %s completed: %s",
            request.get("id"),
            url_for_log(request.get("output_url")),
        )
        return str(request["id"])

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the input media (URLs or files) in, the lip-sync job out (see :mod:`~airflow_provider_chamelaion.utils.lineage`)."""
        from airflow_provider_chamelaion.utils import lineage

        sources = (self.video_file, self.audio_file) if self.upload_mode else (self.video_url, self.audio_url)
        request_id = getattr(self, "_lineage_request_id", None)
        if request_id is None:  # pragma: no cover - Airflow calls this only after execute succeeded
            return lineage.operator_lineage([lineage.media_dataset(s) for s in sources], [])
        return lineage.operator_lineage(
            inputs=[lineage.media_dataset(source) for source in sources],
            outputs=[lineage.job_dataset(self.hook.get_settings().base_url, request_id)],
            run_facets=lineage.job_run_facets(request_id),
        )


class LipsyncDownloadOperator(ChamelaionHookMixin, BaseOperator):
    """Downloads a completed lip-sync request's output, streamed and atomically.

    :param request_id: request UUID or ``reference_id`` (templated), e.g. ``generate.output``.
    :param destination: a local or object-storage file path (templated); an existing directory, or a
        path ending in ``/``, gets the output's own file name. Nothing is left there if the download fails.
    :param chamelaion_conn_id: the Airflow connection (default ``chamelaion_default``).
    :param hook_params: hook arguments (``max_attempts``, ``timeout``, ``download_timeout``).
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
        chamelaion_conn_id: str = DEFAULT_CONN_ID,
        hook_params: dict[str, Any] | None = None,
        asset: Any = None,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_chamelaion.utils.assets import destination_asset

        self.asset = destination_asset(asset, destination, kwargs.get("task_id", "download"))
        if self.asset is not None:
            kwargs["outlets"] = [*(kwargs.get("outlets") or []), self.asset]
        super().__init__(**kwargs)
        self.request_id = request_id
        self.destination = destination
        self.chamelaion_conn_id = chamelaion_conn_id
        self.hook_params = check_hook_params(self.task_id, hook_params)
        # At parse time: a destination this installation cannot write fails the DAG import, so no run
        # (and no upstream generate task) pays for a job whose output could not be saved. The rendered
        # value is checked again when the task starts.
        check_filesystem(destination, f"{self.task_id}: destination")

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
        """OpenLineage: the lip-sync job in, the file written out (see :mod:`~airflow_provider_chamelaion.utils.lineage`)."""
        from airflow_provider_chamelaion.utils import lineage

        request_id, written = self._lineage
        return lineage.operator_lineage(
            inputs=[lineage.job_dataset(self.hook.get_settings().base_url, request_id)],
            outputs=[lineage.media_dataset(written)],
            run_facets=lineage.job_run_facets(request_id),
        )


__all__ = ["LipsyncDownloadOperator", "LipsyncGenerateOperator"]
