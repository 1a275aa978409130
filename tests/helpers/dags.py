"""Importing a DAG file in a test."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_dag_file(path: Path, module_name: str) -> ModuleType:
    """Import the DAG file at ``path`` afresh as ``module_name`` (not kept in ``sys.modules``), so it reads
    the environment the test just set."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
