"""The "Lip-sync output" extra link: the finished job's output, on the tasks that know it.

Airflow 3 computes extra links on the worker each time a try ends (succeeded, and also deferred) and
stores them (XCom ``_link_LipsyncOutputLink``); the UI shows the stored link. It is the job's signed
``output_url``, so it works until that URL expires: an already expired URL gives no link, and for a
later download use the download operator or ``ChamelaionHook.download_output``, which fetch a fresh URL.

The link and XCom are the two places that keep the whole signed URL (logs show it without its query).
The link reads the request from the operator that just ran when it can: a task that deferred, or a
mapped generate task that did not wait, has none, and reading its missing XCom would make Airflow 3's
task SDK log ``XCom not found`` at ERROR level in a successful run.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from airflow_provider_chamelaion.version_compat import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

    from airflow_provider_chamelaion.version_compat import BaseOperator


def _xcom() -> Any:
    """Airflow's XCom accessor, from the compat module on first use (only when a task finishes)."""
    from airflow_provider_chamelaion.version_compat import XCom

    return XCom


def signed_url_expiry(url: str) -> float | None:
    """When a signed URL stops working (UNIX time), if it says so; ``None`` if it does not.

    Reads the common forms: ``expires=<unix>`` (the simulator, CloudFront) and ``X-Amz-Date`` +
    ``X-Amz-Expires`` / ``X-Goog-Date`` + ``X-Goog-Expires`` (S3 and GCS presigned URLs).
    """
    query = {key.lower(): values[-1] for key, values in parse_qs(urlsplit(url).query).items()}
    try:
        if "expires" in query:
            return float(query["expires"])
        for vendor in ("amz", "goog"):
            signed_at, lifetime = query.get(f"x-{vendor}-date"), query.get(f"x-{vendor}-expires")
            if signed_at and lifetime:
                start = datetime.strptime(signed_at, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
                return start.timestamp() + float(lifetime)
    except ValueError:
        return None
    return None


def output_link(request: Any, now: float | None = None) -> str:
    """The request's ``output_url`` while it is valid, else ``""`` (Airflow shows no link)."""
    url = request.get("output_url") if isinstance(request, dict) else None
    if not isinstance(url, str) or not url:
        return ""
    expiry = signed_url_expiry(url)
    if expiry is not None and expiry <= (time.time() if now is None else now):
        return ""
    return url


#: The attribute a live operator of this provider holds the finished request dict in (``None`` until it
#: has one); a serialized operator (Airflow 2's webserver) has no such attribute.
OUTPUT_REQUEST_ATTRIBUTE = "output_request"
_NOT_LIVE = object()


class LipsyncOutputLink(BaseOperatorLink):
    """Opens the finished lip-sync job's output (its signed ``output_url``, while valid).

    On Airflow 3 (links computed on the worker, with the operator that ran) it reads the operator's
    ``output_request``: nothing yet (a deferral, a generate task that does not wait) means no link,
    without an XCom look-up. On Airflow 2 (the webserver, with the serialized operator) it reads the
    request dict the task pushed: XCom ``request`` from ``LipsyncGenerateOperator`` (with
    ``wait_for_completion``), ``return_value`` from ``LipsyncRequestSensor`` (the operator's
    ``request_xcom_key``); Airflow 2 returns ``None`` for a missing XCom without logging.
    """

    name = "Lip-sync output"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        held = getattr(operator, OUTPUT_REQUEST_ATTRIBUTE, _NOT_LIVE)
        if held is not _NOT_LIVE:
            return output_link(held)
        # Airflow 2's webserver passes the serialized operator, which keeps the class name, not the
        # attribute: the sensor pushes the request as its return value.
        key = getattr(operator, "request_xcom_key", None) or (
            "return_value" if getattr(operator, "task_type", "") == "LipsyncRequestSensor" else "request"
        )
        return output_link(_xcom().get_value(ti_key=ti_key, key=key))


__all__ = ["LipsyncOutputLink"]
