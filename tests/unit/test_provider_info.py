"""The provider metadata Airflow discovers: schema, entry point, connection type and connection form.

Several checks run in a fresh interpreter, because what matters there is what gets imported (the
test process has imported the hook long before).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import airflow_provider_chamelaion
from airflow_provider_chamelaion.get_provider_info import get_provider_info
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from tests.harness.constants import ROOT
from tests.harness.processes import answer, run_python

DISTRIBUTION = "airflow-provider-chamelaion"
HOOK_MODULE = "airflow_provider_chamelaion.hooks.chamelaion"
HOOK_CLASS = f"{HOOK_MODULE}.ChamelaionHook"
PUBLIC_BASE_URL = "https://api.chamelaion.com/api"


def airflow_schema(name: str) -> dict[str, Any]:
    resource = importlib.resources.files("airflow").joinpath(name)
    schema: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return schema


def validate(instance: Any, schema: dict[str, Any]) -> None:
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator_class(schema).validate(instance)


def run_code(code: str, tmp_path: Path) -> Any:
    """Run ``code`` in a fresh interpreter (its own AIRFLOW_HOME); return what it answers."""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow-home"), "PYTHONWARNINGS": "ignore"}
    return answer(run_python("-c", code, env=env, timeout=180))


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    return get_provider_info()


@pytest.fixture(scope="module")
def connection_type(info: dict[str, Any]) -> dict[str, Any]:
    [entry] = info["connection-types"]
    conn: dict[str, Any] = entry
    return conn


# -- the metadata itself ------------------------------------------------------------------------------


def test_provider_info_validates_against_airflows_schema(info: dict[str, Any]) -> None:
    validate(info, airflow_schema("provider_info.schema.json"))


def test_connection_types_validate_against_the_provider_yaml_schema(info: dict[str, Any]) -> None:
    """provider_info.schema.json does not describe ``ui-field-behaviour``; provider.yaml's schema does."""
    schema = airflow_schema("provider.yaml.schema.json")["properties"]["connection-types"]
    validate(info["connection-types"], schema)


def test_the_schema_checks_can_fail(info: dict[str, Any]) -> None:
    no_hook_class = json.loads(json.dumps(info))
    del no_hook_class["connection-types"][0]["hook-class-name"]
    with pytest.raises(jsonschema.ValidationError):
        validate(no_hook_class, airflow_schema("provider_info.schema.json"))


@pytest.mark.skipif(
    "ui-field-behaviour"
    not in airflow_schema("provider.yaml.schema.json")["properties"]["connection-types"]["items"][
        "properties"
    ],
    reason="before Airflow 3.2 the schema does not describe the form (the hook method serves it)",
)
def test_the_form_schema_check_can_fail(info: dict[str, Any]) -> None:
    typo = json.loads(json.dumps(info))
    typo["connection-types"][0]["ui-field-behaviour"]["relabelling"] = {"host": "typo"}
    with pytest.raises(jsonschema.ValidationError):
        validate(
            typo["connection-types"],
            airflow_schema("provider.yaml.schema.json")["properties"]["connection-types"],
        )


def test_field_behaviour_validates_against_airflows_form_schema(connection_type: dict[str, Any]) -> None:
    behaviour = connection_type["ui-field-behaviour"]
    # ProvidersManager turns the kebab-case keys into these before validating (and drops it if invalid).
    converted = {
        "hidden_fields": behaviour.get("hidden-fields", []),
        "relabeling": behaviour.get("relabeling", {}),
        "placeholders": behaviour.get("placeholders", {}),
    }
    validate(converted, airflow_schema("customized_form_field_behaviours.schema.json"))


def test_package_name_and_version_match_the_distribution(info: dict[str, Any]) -> None:
    distribution = importlib.metadata.distribution(DISTRIBUTION)
    assert info["package-name"] == DISTRIBUTION == distribution.metadata["Name"]
    assert info["versions"][0] == distribution.version == airflow_provider_chamelaion.__version__


def test_entry_point_is_registered_and_points_at_get_provider_info() -> None:
    points = [
        point
        for point in importlib.metadata.entry_points(group="apache_airflow_provider")
        if point.dist is not None and point.dist.name == DISTRIBUTION
    ]
    assert [(point.name, point.value) for point in points] == [
        ("provider_info", "airflow_provider_chamelaion.get_provider_info:get_provider_info")
    ]
    assert points[0].load() is get_provider_info


def test_connection_type_maps_to_the_hook(connection_type: dict[str, Any]) -> None:
    assert connection_type["connection-type"] == "chamelaion"
    assert connection_type["hook-class-name"] == HOOK_CLASS
    module_name, _, class_name = connection_type["hook-class-name"].rpartition(".")
    assert getattr(importlib.import_module(module_name), class_name) is ChamelaionHook
    assert ChamelaionHook.conn_type == connection_type["connection-type"]
    assert ChamelaionHook.hook_name == connection_type["hook-name"] == "Chamelaion"
    assert ChamelaionHook.conn_name_attr == "chamelaion_conn_id"
    assert ChamelaionHook.default_conn_name == "chamelaion_default"
    assert ChamelaionHook().chamelaion_conn_id == ChamelaionHook.default_conn_name


def test_hook_form_for_airflow_before_3_2_is_the_provider_info_form(connection_type: dict[str, Any]) -> None:
    """2.11-3.1 read the form from the hook only; it is the provider info's, in the hook's key names."""
    assert ChamelaionHook.get_ui_field_behaviour() == {
        "hidden_fields": ["schema", "login", "port", "extra"],
        "relabeling": {"host": "Base URL", "password": "API key"},
        "placeholders": {"host": PUBLIC_BASE_URL, "password": "your Chamelaion API key"},
    }
    behaviour = connection_type["ui-field-behaviour"]
    assert ChamelaionHook.get_ui_field_behaviour()["placeholders"] == behaviour["placeholders"]
    # No custom widgets: every field the form shows is a standard one.
    assert "get_connection_form_widgets" not in ChamelaionHook.__dict__


def test_connection_form_relabels_host_and_password(connection_type: dict[str, Any]) -> None:
    behaviour = connection_type["ui-field-behaviour"]
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API key"}
    assert behaviour["placeholders"]["host"] == PUBLIC_BASE_URL
    assert "password" in behaviour["placeholders"]
    assert set(behaviour["hidden-fields"]) == {"schema", "login", "port", "extra"}
    assert not {"host", "password"} & set(behaviour["hidden-fields"])


def test_placeholder_is_the_default_base_url_the_hook_uses(connection_type: dict[str, Any]) -> None:
    from airflow_provider_chamelaion.client.settings import parse_base_url

    assert (
        parse_base_url("", "chamelaion_default")
        == connection_type["ui-field-behaviour"]["placeholders"]["host"]
    )


def test_every_listed_module_imports(info: dict[str, Any]) -> None:
    modules = [
        module
        for section in ("operators", "sensors", "hooks", "triggers")
        for entry in info.get(section, [])
        for module in entry["python-modules"]
    ]
    assert len(modules) == 6  # lipsync and batch operators and triggers, the sensor, the hook
    integrations = {entry["integration-name"] for entry in info["integrations"]}
    for section in ("operators", "sensors", "hooks", "triggers"):
        assert {entry["integration-name"] for entry in info[section]} <= integrations
    for module in modules:
        imported = importlib.import_module(module)
        assert imported.__file__ is not None
        assert Path(imported.__file__).is_relative_to(Path(airflow_provider_chamelaion.__file__).parent)


# -- discovery without importing hook code ------------------------------------------------------------


def test_importing_get_provider_info_imports_nothing_from_the_provider(tmp_path: Path) -> None:
    code = """
import json, sys
before = set(sys.modules)
import airflow_provider_chamelaion.get_provider_info as module
info = module.get_provider_info()
new = sorted(set(sys.modules) - before)
print("ANSWER " + json.dumps({"new": new, "package": info["package-name"]}))
"""
    report = run_code(code, tmp_path)

    assert report["package"] == DISTRIBUTION
    provider_modules = {name for name in report["new"] if name.split(".")[0] == "airflow_provider_chamelaion"}
    assert provider_modules == {
        "airflow_provider_chamelaion",
        "airflow_provider_chamelaion.get_provider_info",
    }
    assert HOOK_MODULE not in report["new"]
    assert not [name for name in report["new"] if name.split(".")[0] in ("airflow", "requests", "aiohttp")]


def test_providers_manager_lists_the_connection_type_and_form(tmp_path: Path) -> None:
    code = f"""
import json, sys, warnings
from airflow.providers_manager import ProvidersManager

warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    manager = ProvidersManager()
    provider = manager.providers["{DISTRIBUTION}"]
    # 3.2+: the connection form comes from the provider info, without importing the hook.
    ui = None
    if hasattr(manager, "iter_connection_type_hook_ui_metadata"):
        ui = [m._asdict() for m in manager.iter_connection_type_hook_ui_metadata() if m.connection_type == "chamelaion"]
    hook_imported_for_ui = "{HOOK_MODULE}" in sys.modules
    hook = manager.hooks["chamelaion"]
    behaviours = manager.field_behaviours
    # 3.2+: conn-fields from the provider info (2.11-3.1 read no conn-fields).
    widgets = {{}}
    if ui is not None:
        widgets = {{name: w.field for name, w in manager.connection_form_widgets.items() if "chamelaion" in name}}
print("ANSWER " + json.dumps({{
    "widgets": widgets,
    "version": provider.version,
    "ui": ui,
    "hook_imported_for_ui": hook_imported_for_ui,
    "hook": hook._asdict() if hook else None,
    "field_behaviour": behaviours.get("chamelaion"),
    "warnings": [str(w.message) for w in caught if "chamelaion" in str(w.message).lower()],
}}))
"""
    report = run_code(code, tmp_path)

    assert report["version"] == airflow_provider_chamelaion.__version__
    assert report["warnings"] == [], "no deprecation (or other) warning about this provider"
    if report["ui"] is not None:  # Airflow 3.2+
        [ui] = report["ui"]
        assert ui["hook_name"] == "Chamelaion"
        assert ui["hook_class_name"] == HOOK_CLASS
        assert ui["field_behaviour"]["relabeling"] == {"host": "Base URL", "password": "API key"}
        assert ui["field_behaviour"]["placeholders"]["host"] == PUBLIC_BASE_URL
        assert report["hook_imported_for_ui"] is False, "rendering the form must not import the hook"
        assert report["field_behaviour"] == ui["field_behaviour"]

    hook = report["hook"]
    assert hook is not None, "ProvidersManager could not import the hook"
    assert hook["hook_class_name"] == HOOK_CLASS
    assert hook["connection_id_attribute_name"] == "chamelaion_conn_id"
    assert hook["package_name"] == DISTRIBUTION
    assert hook["hook_name"] == "Chamelaion"
    assert hook["connection_testable"] is True, "the form's Test button"
    assert report["field_behaviour"]["relabeling"] == {"host": "Base URL", "password": "API key"}
    assert report["field_behaviour"]["placeholders"]["host"] == PUBLIC_BASE_URL
    assert set(report["field_behaviour"]["hidden_fields"]) == {"schema", "login", "port", "extra"}
    if report["ui"] is not None:  # 3.2+ (before, the namespace is set in the connection's extra)
        # The deployment's namespace for derived reference ids is a field of its own in the form.
        namespace = report["widgets"]["extra__chamelaion__reference_namespace"]
        assert namespace["schema"]["title"] == "Reference namespace"
        assert "staging" in namespace["description"]


def test_airflow_providers_get_shows_the_provider(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "get", DISTRIBUTION, "--full", "--output", "json"],
        cwd=ROOT,
        env={**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow-home")},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert DISTRIBUTION in result.stdout
    # The JSON list, after any log lines Airflow prints first (3.0 logs "[<timestamp>] ..." lines).
    match = re.search(r"^\[\s*(\{|$)", result.stdout, re.MULTILINE)
    assert match is not None, result.stdout
    start = match.start()
    [shown] = json.loads(result.stdout[start:])
    assert shown["package-name"] == DISTRIBUTION
    assert shown["connection-types"] == get_provider_info()["connection-types"]
