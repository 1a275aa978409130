"""Provider metadata read by Airflow's provider discovery (entry point ``apache_airflow_provider``).

This module imports nothing from the provider: listing providers or rendering the connection form must
not import hook code. The connection form is declared here (``ui-field-behaviour``), the form Airflow
3.2+ prefers over hook methods.
"""

from __future__ import annotations

from typing import Any

PACKAGE_NAME = "airflow-provider-chamelaion"
CONN_TYPE = "chamelaion"
DEFAULT_BASE_URL = "https://api.chamelaion.com/api"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": PACKAGE_NAME,
        "name": "Chamelaion",
        "description": "`Chamelaion <https://chamelaion.com/>`__ lip-sync API: submit, wait for and "
        "download lip-sync jobs.",
        "versions": ["0.1.0"],
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
                "python-modules": ["airflow_provider_chamelaion.operators.lipsync"],
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
                "python-modules": ["airflow_provider_chamelaion.triggers.lipsync"],
            }
        ],
        "extra-links": ["airflow_provider_chamelaion.links.LipsyncOutputLink"],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "airflow_provider_chamelaion.hooks.chamelaion.ChamelaionHook",
                "hook-name": "Chamelaion",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port", "extra"],
                    "relabeling": {"host": "Base URL", "password": "API key"},
                    "placeholders": {"host": DEFAULT_BASE_URL, "password": "your Chamelaion API key"},
                },
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
