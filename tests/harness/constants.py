"""Values every kind of test uses: where the repository is, the test API key, the mocked API's base URL."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = ROOT / "example_dags"
#: A distinctive key: the secret scans search every output for it.
API_KEY = "sk-chmln-TEST-9f4e2a7c1b8d"
#: The public API's base URL as the requests-mock tests see it.
MOCK_BASE_URL = "https://api.chamelaion.test/api"


def connection_json(host: str, password: str | None = API_KEY) -> str:
    """A ``chamelaion`` connection to ``host`` in the JSON form of ``AIRFLOW_CONN_...`` variables."""
    payload = {"conn_type": "chamelaion", "host": host}
    if password is not None:
        payload["password"] = password
    return json.dumps(payload)
