"""Reading a Chamelaion Airflow connection into the two things the hook needs: base URL and API key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_chamelaion.exceptions import ChamelaionConfigError
from airflow_provider_chamelaion.get_provider_info import DEFAULT_BASE_URL


@dataclass(frozen=True)
class ApiSettings:
    """Where the API is and how to authenticate. ``api_key`` is kept out of ``repr``."""

    base_url: str
    api_key: str = field(repr=False)

    @property
    def origin(self) -> tuple[str, str]:
        """(scheme, host:port) of the API: the only origin the API key is ever sent to."""
        return origin_of(self.base_url)


def origin_of(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return parts.scheme.lower(), f"{(parts.hostname or '').lower()}:{port}"


def parse_base_url(host: str | None, conn_id: str, port: int | None = None) -> str:
    """Turn the connection's ``host`` into a base URL (no trailing slash).

    Empty means the public API; a host without a scheme means https. The connection's ``port`` is
    used only when the host does not already name one.
    """
    raw = (host or "").strip()
    if not raw:
        return DEFAULT_BASE_URL
    if "://" not in raw:
        raw = f"https://{raw}"
    parts = urlsplit(raw)
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = f"scheme {parts.scheme!r} is not http or https"
    elif not parts.hostname:
        problem = "it names no host"
    elif parts.query or parts.fragment:
        problem = "it has a query string or fragment"
    else:
        try:
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            problem = "its port is not a number from 0 to 65535"
    if problem:
        raise ChamelaionConfigError(
            f"Chamelaion connection {conn_id!r} has a malformed Base URL (host) {host!r}: {problem}. "
            "Use a full URL such as https://api.chamelaion.com/api"
        )
    netloc = parts.netloc
    if port and parts.port is None:
        netloc = f"{netloc}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def settings_from_connection(conn: Any, conn_id: str) -> ApiSettings:
    """Validate an Airflow ``Connection`` and return its :class:`ApiSettings`."""
    api_key = (conn.password or "").strip()
    if not api_key:
        raise ChamelaionConfigError(
            f"Chamelaion connection {conn_id!r} has no API key: put the key in the connection's "
            "password field (shown as 'API key' in the UI)"
        )
    return ApiSettings(base_url=parse_base_url(conn.host, conn_id, conn.port), api_key=api_key)


def missing_connection_error(conn_id: str) -> ChamelaionConfigError:
    env_name = f"AIRFLOW_CONN_{conn_id.upper()}"
    return ChamelaionConfigError(
        f"Chamelaion connection {conn_id!r} is not defined: create it in the UI, or set {env_name}="
        '\'{"conn_type": "chamelaion", "host": "https://api.chamelaion.com/api", "password": "<key>"}\''
    )
