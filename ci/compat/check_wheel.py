"""Run from outside the source tree, in a venv holding only the built wheel and Airflow: every module of
the installed package imports (the simulator only with its extra), the provider info is found through its entry point, and Airflow's
ProvidersManager lists the connection type with the hook. Usage: python check_wheel.py <airflow version>.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import sys
import warnings
from pathlib import Path

DISTRIBUTION = "airflow-provider-chamelaion"
SIMULATOR = "airflow_provider_chamelaion.simulator"


def _import_error(name: str) -> str | None:
    """The ImportError's message if ``name`` cannot be imported, else ``None``."""
    try:
        importlib.import_module(name)
    except ImportError as err:
        return str(err)
    return None


def main(expected_airflow: str) -> None:
    import airflow

    assert airflow.__version__ == expected_airflow, (airflow.__version__, expected_airflow)
    import airflow_provider_chamelaion as package

    location = Path(package.__file__).resolve()
    assert "site-packages" in location.parts, f"imported from {location}, not the installed wheel"

    modules = [package.__name__] + [
        info.name for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in modules:
            if name.endswith("__main__") or name.startswith(SIMULATOR):
                continue
            importlib.import_module(name)
    # The simulator is the [simulator] extra, not installed here: without its server stack it must say
    # which extra to install (Airflow 3 brings FastAPI itself, so there it may simply import).
    refusal = _import_error(SIMULATOR)
    assert refusal is None or '"airflow-provider-chamelaion[simulator]"' in refusal, refusal
    # A deprecation warning raised by the provider's own code (an old import path) is a bug; Airflow 2
    # warning about its own modules is not ours.
    ours = [
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, DeprecationWarning)
        and Path(w.filename).resolve().is_relative_to(location.parent)
    ]
    assert not ours, ours

    [entry_point] = [
        point
        for point in importlib.metadata.entry_points(group="apache_airflow_provider")
        if point.dist is not None and point.dist.name == DISTRIBUTION
    ]
    info = entry_point.load()()
    assert info["package-name"] == DISTRIBUTION

    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert DISTRIBUTION in manager.providers, sorted(manager.providers)
    hook = manager.hooks["chamelaion"]
    assert hook is not None, "ProvidersManager could not import the hook"
    assert hook.hook_class_name == "airflow_provider_chamelaion.hooks.chamelaion.ChamelaionHook"
    print(
        f"wheel OK on Airflow {airflow.__version__}: {len(modules)} modules imported from {location.parent}, "
        f"provider {manager.providers[DISTRIBUTION].version}, connection type 'chamelaion' -> {hook.hook_name}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
