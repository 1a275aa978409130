"""Registering the API key with Airflow's secrets masker, and reading the connection that holds it,
without leaking the key on Airflow 3.0 and without blocking the triggerer before 3.3.

Two workarounds, each to delete when the provider stops supporting the line that needs it:

* **Airflow 3.0** (delete with 3.0 support): its ``mask_secret`` sends the secret to the supervisor in a
  ``MaskSecret`` message, and ``dag.test()``'s in-process supervisor logs every message at DEBUG,
  unredacted (``Sending request msg=MaskSecret(value='<the key>')``). So on 3.0 the key is registered
  with the task process's own masker only, and a connection from a secrets backend (environment
  variables included) is read with the supervisor channel set aside. 2.x and 3.1+ use Airflow's
  ``mask_secret`` as it is.
* **Airflow before 3.3** (delete with 3.2 support): there is no asynchronous masking, and
  ``BaseHook.aget_connection`` (3.1, 3.2) masks with a synchronous supervisor call on the event loop; the
  sync look-up runs in a worker thread instead, as common-compat's ``get_async_connection`` does.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from airflow_provider_chamelaion.version_compat import (
    MASKING_SENDS_THE_SECRET,
    BaseHook,
    airflow_mask_secret,
    sdk_amask_secret,
)


def _mask_locally(*secrets: Any) -> None:
    """Register ``secrets`` with this process's masker only (Airflow 3.0), so any later log line that
    holds them, Airflow's own included, is redacted."""
    from airflow.sdk.execution_time.secrets_masker import _secrets_masker

    masker = _secrets_masker()
    for secret in secrets:
        if secret:
            masker.add_mask(secret)


def mask_secret(value: str) -> None:
    """Redact ``value`` in every log from now on, in this process and (3.x) in the supervisor's."""
    if MASKING_SENDS_THE_SECRET:
        _mask_locally(value)
        return
    airflow_mask_secret(value)


def _in_task_process() -> bool:
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return getattr(runner, "SUPERVISOR_COMMS", None) is not None


def get_connection(hook: BaseHook, conn_id: str) -> Any:
    """``hook.get_connection(conn_id)``; on Airflow 3.0, in a task, without sending its secrets to the
    supervisor (a secrets backend's connection masks its own password as it is built).

    Only on the task's main thread: a worker thread (the triggerer's look-ups) must not swap the
    process-wide channel, and there the key reaches no log line unmasked (the secret scan checks).
    """
    if (
        not MASKING_SENDS_THE_SECRET
        or not _in_task_process()
        or threading.current_thread() is not threading.main_thread()
    ):
        return hook.get_connection(conn_id)
    from airflow.sdk import Connection
    from airflow.sdk.execution_time.supervisor import ensure_secrets_backend_loaded, set_supervisor_comms

    for backend in ensure_secrets_backend_loaded():
        try:
            with set_supervisor_comms(None):
                conn = backend.get_connection(conn_id=conn_id)
        except Exception:  # noqa: S112 - as Airflow's own lookup does: try the next backend
            continue
        if conn:
            _mask_locally(conn.password, conn.extra)
            return conn
    return Connection.get(conn_id)


async def amask_secret(value: str) -> None:
    """Register ``value`` with the secrets masker without blocking the event loop, on every line."""
    if sdk_amask_secret is not None:
        await sdk_amask_secret(value)
        return
    from asgiref.sync import sync_to_async

    # sync_to_async, not asyncio.to_thread: on 3.x the masker reaches the supervisor through a comms
    # channel bound to the triggerer's event loop, and asgiref lets the worker thread call back into it.
    await sync_to_async(mask_secret)(value)


async def aget_connection(hook: BaseHook, conn_id: str) -> Any:
    """``hook``'s connection ``conn_id``, with no synchronous database, secrets or supervisor call on the loop."""
    if sdk_amask_secret is not None:
        return await hook.aget_connection(conn_id)
    from asgiref.sync import sync_to_async

    return await sync_to_async(get_connection)(hook, conn_id)


__all__ = ["aget_connection", "amask_secret", "get_connection", "mask_secret"]
