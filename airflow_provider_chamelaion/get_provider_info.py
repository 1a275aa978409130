"""Provider metadata read by Airflow's provider discovery (entry point ``apache_airflow_provider``).

This module imports nothing from the provider but its version (from the import-free ``__init__``): listing
providers or rendering the connection form must not import hook code. The connection form is declared here (``ui-field-behaviour``), the form Airflow
3.2+ prefers over hook methods; the hook's ``get_ui_field_behaviour`` serves the same definition to
Airflow 2.11-3.1, which only read the hook.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_chamelaion import __version__

PACKAGE_NAME = "airflow-provider-chamelaion"
CONN_TYPE = "chamelaion"
DEFAULT_BASE_URL = "https://api.chamelaion.com/api"
#: The connection form: one definition for every Airflow line (see :func:`hook_field_behaviour`).
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login", "port", "extra"],
    "relabeling": {"host": "Base URL", "password": "API key"},
    "placeholders": {"host": DEFAULT_BASE_URL, "password": "your Chamelaion API key"},
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": PACKAGE_NAME,
        "name": "Chamelaion",
        "description": "`Chamelaion <https://chamelaion.com/>`__ lip-sync API: submit, wait for and "
        "download lip-sync jobs.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Chamelaion",
                "external-doc-url": "https://chamelaion.com/",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": "Chamelaion",
                "python-modules": [
                    "airflow_provider_chamelaion.operators.lipsync",
                    "airflow_provider_chamelaion.operators.batch",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Chamelaion",
                "python-modules": ["airflow_provider_chamelaion.sensors.lipsync"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Chamelaion",
                "python-modules": ["airflow_provider_chamelaion.hooks.chamelaion"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Chamelaion",
                "python-modules": [
                    "airflow_provider_chamelaion.triggers.lipsync",
                    "airflow_provider_chamelaion.triggers.batch",
                ],
            }
        ],
        "extra-links": ["airflow_provider_chamelaion.utils.links.LipsyncOutputLink"],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "airflow_provider_chamelaion.hooks.chamelaion.ChamelaionHook",
                "hook-name": "Chamelaion",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": {
                    "reference_namespace": {
                        "label": "Reference namespace",
                        "description": "Name of this Airflow deployment (e.g. staging). It goes into every "
                        "reference_id the operator derives, so deployments sharing one API key never "
                        "reuse each other's jobs.",
                        "schema": {"type": ["string", "null"]},
                    },
                },
            }
        ],
    }


def hook_field_behaviour() -> dict[str, Any]:
    """The same form in the shape of a hook's ``get_ui_field_behaviour()``, which Airflow before 3.2 reads
    (3.2 and later read ``ui-field-behaviour`` above and never call the hook method)."""
    return {
        "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
        "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
        "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
    }
