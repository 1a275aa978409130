"""What every Chamelaion operator and sensor shares: its hook, its argument checks, and the wait it
hands to the triggerer.

Imports nothing heavy: DAG files import the operator modules constantly, and the hook (``requests``,
``aiohttp``) and the trigger load only when a task runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_chamelaion.client.settings import DEFAULT_CONN_ID
from airflow_provider_chamelaion.exceptions import ChamelaionConfigError

if TYPE_CHECKING:
    from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
    from airflow_provider_chamelaion.triggers.lipsync import LipsyncRequestTrigger

#: What ``hook_params`` may set: hook arguments that survive the trip to the triggerer as JSON.
HOOK_PARAMS = frozenset({"max_attempts", "timeout", "download_timeout"})


def seconds(value: float | timedelta) -> float:
    """A duration given as seconds or a ``timedelta``, in seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def check_positive(task_id: str, **durations: float) -> None:
    """Raise naming the first of ``durations`` (seconds) that is not positive."""
    for name, value in durations.items():
        if not value > 0:
            raise ChamelaionConfigError(f"{task_id}: {name} must be positive (seconds), got {value:g}")


def check_whole(task_id: str, *, minimum: int = 1, **counts: object) -> None:
    """Raise naming the first of ``counts`` that is not a whole number of at least ``minimum``
    (``None`` passes: an optional count left unset)."""
    for name, value in counts.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ChamelaionConfigError(
                f"{task_id}: {name} must be a whole number of at least {minimum}, got {value!r}"
            )


def check_hook_params(task_id: str, hook_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``hook_params`` as a dict, refusing keys the triggerer could not be handed."""
    params = dict(hook_params or {})
    unknown = sorted(set(params) - HOOK_PARAMS)
    if unknown:
        raise ChamelaionConfigError(
            f"{task_id}: hook_params {', '.join(unknown)} cannot be used; give any of "
            f"{', '.join(sorted(HOOK_PARAMS))}"
        )
    return params


class ChamelaionHookMixin:
    """The ``hook`` of an operator or sensor: its connection and ``hook_params``, made on first use.

    ``hook_params`` go to the hook here and to the trigger a deferred wait hands over (as dbt-cloud's
    operators do), so a wait in the triggerer uses the same timeouts and attempts as the task.
    """

    chamelaion_conn_id: str
    hook_params: dict[str, Any]

    @cached_property
    def hook(self) -> ChamelaionHook:
        from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

        return ChamelaionHook(self.chamelaion_conn_id, **self.hook_params)

    def wait_trigger(
        self,
        request_id: str,
        *,
        poll_interval: float,
        timeout: float,
        still_waiting_interval: float,
        try_number: int | None,
    ) -> LipsyncRequestTrigger:
        """The trigger a deferred wait on ``request_id`` hands to the triggerer (operator and sensor)."""
        from airflow_provider_chamelaion.triggers.lipsync import LipsyncRequestTrigger

        return LipsyncRequestTrigger(
            request_id=request_id,
            chamelaion_conn_id=self.chamelaion_conn_id,
            poll_interval=poll_interval,
            end_time=time.time() + timeout,
            still_waiting_interval=still_waiting_interval,
            hook_params=self.hook_params,
            try_number=try_number,
        )


__all__ = [
    "DEFAULT_CONN_ID",
    "HOOK_PARAMS",
    "ChamelaionHookMixin",
    "check_hook_params",
    "check_positive",
    "check_whole",
    "seconds",
]
