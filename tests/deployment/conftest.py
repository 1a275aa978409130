"""Every test under tests/deployment is marked ``deployment``: Airflow's components (and for the scale
test PostgreSQL, Redis, Celery workers and an S3 server) run as separate processes, for minutes.
``pytest -m "not deployment"`` leaves them out; ``make test`` runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by marker (-m)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.deployment)
