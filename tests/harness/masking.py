"""Airflow's secrets masker, wherever the running Airflow line keeps it (tests only: the provider
itself only calls ``utils.secrets.mask_secret`` / ``amask_secret``)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest

#: Where each line keeps its masker, newest first: 3.3 (``airflow.sdk.log`` binds ``_secrets_masker``
#: at import), 3.1-3.2 (looked up in ``airflow.sdk._shared`` at each call), 3.0, 2.x.
MASKER_MODULES = (
    "airflow.sdk.log",
    "airflow.sdk._shared.secrets_masker",
    "airflow.sdk.execution_time.secrets_masker",
    "airflow.utils.log.secrets_masker",
)


def _modules() -> list[ModuleType]:
    found = []
    for name in MASKER_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            continue
    return found


def fresh_masker(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A new, empty SecretsMasker that ``mask_secret`` (sync and async) registers with from now on."""
    modules = _modules()
    masker_class = next(module.SecretsMasker for module in modules if hasattr(module, "SecretsMasker"))
    fresh = masker_class()
    for module in modules:
        if hasattr(module, "_secrets_masker"):
            monkeypatch.setattr(module, "_secrets_masker", lambda: fresh)
    return fresh


def redact(value: Any) -> Any:
    """``value`` as Airflow's global masker redacts it."""
    module = next(module for module in _modules() if hasattr(module, "redact"))
    return module.redact(value)
