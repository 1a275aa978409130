"""A stand-in for the Airflow context an operator or sensor is run with: a task instance that records
its XCom pushes and, optionally, a task state store."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from airflow_provider_chamelaion.version_compat import Context

DAG_ID = "dubbing"
TASK_ID = "generate"
RUN_ID = "manual__2026-11-25T00:00:00+00:00"


class FakeTI:
    """The bits of a task instance the operators and the sensor touch; XCom pushes are recorded.

    :param on_push: called with each pushed key and value, after it is recorded.
    """

    def __init__(
        self,
        *,
        dag_id: str = DAG_ID,
        task_id: str = TASK_ID,
        run_id: str = RUN_ID,
        map_index: int = -1,
        try_number: int = 1,
        on_push: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.dag_id = dag_id
        self.task_id = task_id
        self.run_id = run_id
        self.map_index = map_index
        self.try_number = try_number
        self.pushes: list[tuple[str, Any]] = []
        self._on_push = on_push

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushes.append((key, value))
        if self._on_push is not None:
            self._on_push(key, value)

    def pushed(self, key: str) -> list[Any]:
        """The values pushed under ``key``, in order."""
        return [value for pushed_key, value in self.pushes if pushed_key == key]


class FakeTaskStateStore:
    """An in-memory task state store."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


def make_context(
    ti: FakeTI | None = None, *, state_store: FakeTaskStateStore | None = None, **ti_fields: Any
) -> Context:
    """A context with ``ti`` (else a new ``FakeTI(**ti_fields)``) and, if given, ``state_store`` as its
    ``task_state_store``."""
    if ti is not None and ti_fields:
        raise TypeError("pass either a task instance or its fields, not both")
    context: dict[str, Any] = {"ti": ti if ti is not None else FakeTI(**ti_fields)}
    if state_store is not None:
        context["task_state_store"] = state_store
    return cast("Context", context)
