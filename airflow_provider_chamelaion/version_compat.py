"""The one module that knows Airflow versions: every other module imports Airflow names from here.

The provider supports Airflow 2.11 through 3.3 with one wheel. Names moved between those lines
(measured on 2.11.2, 3.0.6, 3.1.8, 3.2.2, 3.3.0 and 3.3.2):

* 2.11 has no ``airflow.sdk``: the bases, ``conf``, the exceptions, ``ObjectStoragePath``
  (``airflow.io.path``) and ``DAG`` live at their old paths.
* 3.0 lacks ``airflow.sdk.conf``, ``airflow.sdk.BaseHook`` and every ``airflow.sdk.exceptions`` class;
  3.1 lacks ``AirflowNotFoundException``, ``AirflowFailException``, ``AirflowSensorTimeout``,
  ``AirflowSkipException`` and ``TaskDeferred`` there; 3.0-3.2 lack ``airflow.sdk.log.amask_secret``.
  Where ``airflow.sdk`` has no name, the old path is the one the SDK itself raises or reads on that
  line (e.g. 3.1's ``airflow.sdk`` raises ``airflow.exceptions.AirflowNotFoundException``).
* ``BaseTrigger`` and ``TriggerEvent`` live in ``airflow.triggers.base`` on every line.

Each name is looked up newest path first (feature detection, not version numbers), so a patch release
that backports a name is used as it is, and the newest path never emits a deprecation warning on 3.x.
The ``AIRFLOW_V_*`` flags exist for behaviour that differs without a name to detect.

Why not ``apache-airflow-providers-common-compat`` (``airflow.providers.common.compat.sdk``), the map
official providers import from? Read and measured (1.23.0): it maps the same names the same way, but

* 1.23.0 requires Python 3.11 while Airflow 2.11-3.2 (and this provider) run on 3.10, so a 3.10 user
  gets an older common-compat whose map lacks names (which ones depends on the release the managed
  service ships), and our imports would break there, not here;
* it has no ``amask_secret`` fallback, no ``BaseTrigger``/``TriggerEvent`` entry, and its async
  connection helper uses the sync lookup up to 3.3.1 and a marker (``Connection.aextra_dejson``) that
  says nothing about whether the secret can be masked asynchronously, which is what we need to know;
* it is no cheaper: after ``import airflow``, importing the names the provider uses through it took
  a median 40 ms on 3.3.0 and 1,188 ms on 2.11.2 (five fresh processes each, on a busy 2-core
  machine), this module 32 ms and 1,383 ms; the spreads (15-72 ms, 928-2,388 ms) overlap, and on
  2.11 almost all of it is ``airflow.models`` itself, which both paths import.

So this module does its own guarded imports, in the same newest-first order as common-compat, and
keeps the two async helpers the triggers need (:func:`aget_connection`, :func:`amask_secret`).
Nothing here imports object storage at module import: ``ObjectStoragePath``, ``DAG``, ``task`` and the
asset class are resolved on first use (module ``__getattr__``), so importing the operator does not
pay for fsspec.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from airflow import __version__ as AIRFLOW_VERSION_STRING
from packaging.version import Version

AIRFLOW_VERSION = Version(Version(AIRFLOW_VERSION_STRING).base_version)
AIRFLOW_V_3_0_PLUS = Version("3.0.0") <= AIRFLOW_VERSION
AIRFLOW_V_3_1_PLUS = Version("3.1.0") <= AIRFLOW_VERSION
AIRFLOW_V_3_2_PLUS = Version("3.2.0") <= AIRFLOW_VERSION
AIRFLOW_V_3_3_PLUS = Version("3.3.0") <= AIRFLOW_VERSION


def _first(name: str, *modules: str) -> Any:
    """``name`` from the first of ``modules`` that has it (newest path first)."""
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise ImportError(f"cannot import {name} from any of {', '.join(modules)} (Airflow {AIRFLOW_VERSION})")


if TYPE_CHECKING:
    # mypy checks against the locked Airflow (3.3.2), where every name is at its newest path.
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import (
        DAG,
        Asset,
        BaseHook,
        BaseOperator,
        BaseOperatorLink,
        BaseSensorOperator,
        Context,
        ObjectStoragePath,
        PokeReturnValue,
        XComArg,
        conf,
        task,
    )
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
    from airflow.sdk.execution_time.xcom import XCom
    from airflow.sdk.io.fs import has_fs
    from airflow.sdk.log import mask_secret as _airflow_mask_secret
    from airflow.triggers.base import BaseTrigger, TriggerEvent
else:
    BaseHook = _first("BaseHook", "airflow.sdk", "airflow.hooks.base")
    BaseOperator = _first("BaseOperator", "airflow.sdk", "airflow.models.baseoperator")
    BaseSensorOperator = _first("BaseSensorOperator", "airflow.sdk", "airflow.sensors.base")
    BaseOperatorLink = _first("BaseOperatorLink", "airflow.sdk", "airflow.models.baseoperatorlink")
    PokeReturnValue = _first("PokeReturnValue", "airflow.sdk", "airflow.sensors.base")
    conf = _first("conf", "airflow.sdk", "airflow.configuration")

    AirflowException = _first("AirflowException", "airflow.sdk.exceptions", "airflow.exceptions")
    AirflowNotFoundException = _first(
        "AirflowNotFoundException", "airflow.sdk.exceptions", "airflow.exceptions"
    )
    AirflowFailException = _first("AirflowFailException", "airflow.sdk.exceptions", "airflow.exceptions")
    AirflowSensorTimeout = _first("AirflowSensorTimeout", "airflow.sdk.exceptions", "airflow.exceptions")
    AirflowSkipException = _first("AirflowSkipException", "airflow.sdk.exceptions", "airflow.exceptions")
    TaskDeferred = _first("TaskDeferred", "airflow.sdk.exceptions", "airflow.exceptions")

    _airflow_mask_secret = _first("mask_secret", "airflow.sdk.log", "airflow.utils.log.secrets_masker")
    from airflow.triggers.base import BaseTrigger, TriggerEvent

    # Type-only names: a runtime import of them (``from ... import Context``) still works.
    Context = _first("Context", "airflow.sdk", "airflow.utils.context")
    XComArg = _first("XComArg", "airflow.sdk", "airflow.models.xcom_arg")

#: Names resolved on first use (``from version_compat import ObjectStoragePath`` inside a function):
#: object storage imports fsspec and universal-pathlib, which the operator modules must not pay for.
_LAZY: dict[str, tuple[str, ...]] = {
    "ObjectStoragePath": ("airflow.sdk", "airflow.io.path"),
    "DAG": ("airflow.sdk", "airflow.models.dag"),
    "task": ("airflow.sdk", "airflow.decorators"),
    # For the tests and tools that load DAG files (3.3 moved it to the dag processor).
    "DagBag": ("airflow.dag_processing.dagbag", "airflow.models.dagbag"),
    # Read only when a task runs (extra links) or a DAG names object storage (parse-time check).
    "XCom": ("airflow.sdk.execution_time.xcom", "airflow.models.xcom"),
    "has_fs": ("airflow.sdk.io.fs", "airflow.io"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = _first(name, *_LAZY[name])
        globals()[name] = value
        return value
    if name == "Asset":
        # 2.x calls it Dataset (airflow.datasets); 3.x deprecates that name.
        value = (
            _first("Asset", "airflow.sdk") if AIRFLOW_V_3_0_PLUS else _first("Dataset", "airflow.datasets")
        )
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Airflow 3.0's ``mask_secret`` sends the secret to the supervisor in a ``MaskSecret`` message, and
#: ``dag.test()``'s in-process supervisor logs every message it is sent at DEBUG, unredacted:
#: ``Sending request msg=MaskSecret(value='<the key>')``, whether or not the key was masked before
#: (measured). So on 3.0 the provider registers its secrets with the task's own masker only and never
#: sends them: the supervisor receives the key only inside a connection lookup's answer, which it does
#: not log. 3.1+ and 2.x use Airflow's ``mask_secret`` as it is.
_SENDS_BEFORE_MASKING = AIRFLOW_V_3_0_PLUS and not AIRFLOW_V_3_1_PLUS


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
    if _SENDS_BEFORE_MASKING:
        _mask_locally(value)
        return
    _airflow_mask_secret(value)


def get_connection(hook: BaseHook, conn_id: str) -> Any:
    """``hook.get_connection(conn_id)``, except that on Airflow 3.0, in a task, the connection's secrets are
    registered with the task's own masker and not sent to the supervisor (see ``_SENDS_BEFORE_MASKING``).

    On 3.0 a connection found in a secrets backend (environment variables included) masks its own
    password as it is built, and that ``mask_secret`` sends it to the supervisor first. So the backends
    are read here with the supervisor channel set aside (``set_supervisor_comms(None)``, Airflow's own
    helper: masking is then local only). A connection from the metadata database comes back from the
    API server, whose answer is not logged, and the hook masks its key (locally) right after.
    Only on the task's main thread: a worker thread (the triggerer's lookups) must not swap the
    process-wide channel, and there the key reaches no log line unmasked (measured by the secret scan).
    """
    import threading

    if (
        not _SENDS_BEFORE_MASKING
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


def _in_task_process() -> bool:
    import sys

    return (
        getattr(sys.modules.get("airflow.sdk.execution_time.task_runner"), "SUPERVISOR_COMMS", None)
        is not None
    )


def _optional(name: str, *modules: str) -> Any:
    try:
        return _first(name, *modules)
    except ImportError:
        return None


# Absent before 3.3: no asynchronous masking.
_sdk_amask_secret: Callable[[str], Awaitable[None]] | None = _optional("amask_secret", "airflow.sdk.log")

#: The task SDK masks secrets (its own and a connection's) without a blocking supervisor call: 3.3+.
#: Before that, ``BaseHook.aget_connection`` (3.1, 3.2) masks the connection's secrets with a
#: synchronous supervisor call on the event loop, which official providers avoid (common-compat's
#: ``get_async_connection``) by running the sync lookup in a worker thread.
HAS_ASYNC_MASKING = _sdk_amask_secret is not None


async def amask_secret(value: str) -> None:
    """Register ``value`` with the secrets masker without blocking the event loop, on every line."""
    if _sdk_amask_secret is not None:
        await _sdk_amask_secret(value)
        return
    from asgiref.sync import sync_to_async

    # sync_to_async, not asyncio.to_thread: on 3.x the masker reaches the supervisor through a comms
    # channel bound to the triggerer's event loop, and asgiref lets the worker thread call back into it.
    await sync_to_async(mask_secret)(value)


async def aget_connection(hook: BaseHook, conn_id: str) -> Any:
    """``hook``'s connection ``conn_id``, with no synchronous database, secrets or supervisor call on the loop."""
    if HAS_ASYNC_MASKING:
        return await hook.aget_connection(conn_id)
    from asgiref.sync import sync_to_async

    return await sync_to_async(get_connection)(hook, conn_id)


__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "DAG",
    "HAS_ASYNC_MASKING",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "Asset",
    "BaseHook",
    "BaseOperator",
    "BaseOperatorLink",
    "BaseSensorOperator",
    "BaseTrigger",
    "Context",
    "DagBag",
    "ObjectStoragePath",
    "PokeReturnValue",
    "TaskDeferred",
    "TriggerEvent",
    "XCom",
    "XComArg",
    "aget_connection",
    "amask_secret",
    "conf",
    "get_connection",
    "has_fs",
    "mask_secret",
    "task",
]
