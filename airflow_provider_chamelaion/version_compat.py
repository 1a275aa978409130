"""The one module that knows Airflow versions: version flags, and the Airflow names the provider uses.

One wheel serves Airflow 2.11 through 3.3, and names moved between those lines: 2.11 has no
``airflow.sdk``; 3.0 lacks ``airflow.sdk.conf``, ``airflow.sdk.BaseHook`` and every
``airflow.sdk.exceptions`` class; 3.1 lacks four of those exceptions; 3.0-3.2 lack
``airflow.sdk.log.amask_secret``. Each name is looked up newest path first (feature detection, not
version numbers), so a patch release that backports a name is used as it is and the newest path never
warns of a deprecation. The flags are for behaviour that differs without a name to detect it by.

Why not ``apache-airflow-providers-common-compat``, which official providers import these names from:
its current release needs Python 3.11, while Airflow 2.11-3.2 and this provider run on 3.10, and the
older release a 3.10 user would get lacks names; it has no ``amask_secret`` fallback; and it is no
cheaper to import (``benchmarks/results.md``, imports section).

Object storage, the asset class and XCom are resolved on first use (module ``__getattr__``): importing an
operator module must not pay for fsspec.
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

#: Airflow 3.0's ``mask_secret`` sends the secret to the supervisor in a message that ``dag.test()``'s
#: in-process supervisor logs unredacted; 3.1 fixed it (:mod:`.utils.secrets` works around it).
MASKING_SENDS_THE_SECRET = AIRFLOW_V_3_0_PLUS and not AIRFLOW_V_3_1_PLUS


def import_first(name: str, *modules: str) -> Any:
    """``name`` from the first of ``modules`` that has it (newest path first). Public for the tests'
    own Airflow names, which are looked up the same way."""
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
    from airflow.sdk import (
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
    )
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
        AirflowSkipException,
    )
    from airflow.sdk.execution_time.xcom import XCom
    from airflow.sdk.io.fs import has_fs
    from airflow.sdk.log import mask_secret as airflow_mask_secret
    from airflow.triggers.base import BaseTrigger, TriggerEvent
else:
    BaseHook = import_first("BaseHook", "airflow.sdk", "airflow.hooks.base")
    BaseOperator = import_first("BaseOperator", "airflow.sdk", "airflow.models.baseoperator")
    BaseSensorOperator = import_first("BaseSensorOperator", "airflow.sdk", "airflow.sensors.base")
    BaseOperatorLink = import_first("BaseOperatorLink", "airflow.sdk", "airflow.models.baseoperatorlink")
    PokeReturnValue = import_first("PokeReturnValue", "airflow.sdk", "airflow.sensors.base")
    conf = import_first("conf", "airflow.sdk", "airflow.configuration")

    AirflowException = import_first("AirflowException", "airflow.sdk.exceptions", "airflow.exceptions")
    AirflowNotFoundException = import_first(
        "AirflowNotFoundException", "airflow.sdk.exceptions", "airflow.exceptions"
    )
    AirflowFailException = import_first(
        "AirflowFailException", "airflow.sdk.exceptions", "airflow.exceptions"
    )
    AirflowSensorTimeout = import_first(
        "AirflowSensorTimeout", "airflow.sdk.exceptions", "airflow.exceptions"
    )
    AirflowSkipException = import_first(
        "AirflowSkipException", "airflow.sdk.exceptions", "airflow.exceptions"
    )

    airflow_mask_secret = import_first("mask_secret", "airflow.sdk.log", "airflow.utils.log.secrets_masker")
    from airflow.triggers.base import BaseTrigger, TriggerEvent

    # Type-only names: a runtime import of them (``from ... import Context``) still works.
    Context = import_first("Context", "airflow.sdk", "airflow.utils.context")
    XComArg = import_first("XComArg", "airflow.sdk", "airflow.models.xcom_arg")


def _optional(name: str, *modules: str) -> Any:
    try:
        return import_first(name, *modules)
    except ImportError:
        return None


#: Airflow 3.3's masking without a blocking supervisor call (``None`` before 3.3).
sdk_amask_secret: Callable[[str], Awaitable[None]] | None = _optional("amask_secret", "airflow.sdk.log")

#: Names resolved on first use (``from version_compat import ObjectStoragePath`` inside a function):
#: object storage imports fsspec and universal-pathlib, which the operator modules must not pay for.
_LAZY: dict[str, tuple[str, ...]] = {
    "ObjectStoragePath": ("airflow.sdk", "airflow.io.path"),
    # Read only when a task runs (extra links) or a DAG names object storage (parse-time check).
    "XCom": ("airflow.sdk.execution_time.xcom", "airflow.models.xcom"),
    "has_fs": ("airflow.sdk.io.fs", "airflow.io"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = import_first(name, *_LAZY[name])
        globals()[name] = value
        return value
    if name == "Asset":
        # 2.x calls it Dataset (airflow.datasets); 3.x deprecates that name.
        value = (
            import_first("Asset", "airflow.sdk")
            if AIRFLOW_V_3_0_PLUS
            else import_first("Dataset", "airflow.datasets")
        )
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "MASKING_SENDS_THE_SECRET",
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
    "ObjectStoragePath",
    "PokeReturnValue",
    "TriggerEvent",
    "XCom",
    "XComArg",
    "airflow_mask_secret",
    "conf",
    "has_fs",
    "import_first",
    "sdk_amask_secret",
]
