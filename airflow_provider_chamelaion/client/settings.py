"""Reading a Chamelaion Airflow connection into the two things the hook needs: base URL and API key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_chamelaion.exceptions import ChamelaionConfigError
from airflow_provider_chamelaion.get_provider_info import DEFAULT_BASE_URL

#: The connection every hook, operator, sensor and trigger uses unless told otherwise.
DEFAULT_CONN_ID = "chamelaion_default"
#: Connection extra naming the deployment (e.g. ``staging``); part of every derived ``reference_id``.
NAMESPACE_EXTRA = "reference_namespace"
#: Connection extra giving the scheme when ``host`` has none (URI-form connections): http or https.
SCHEME_EXTRA = "scheme"


@dataclass(frozen=True)
class ApiSettings:
    """Where the API is and how to authenticate. ``api_key`` is kept out of ``repr``.

    :param reference_namespace: the deployment's namespace (connection extra ``reference_namespace``),
        hashed into every ``reference_id`` the operator derives, so two deployments on one API key never
        share a job.
    """

    base_url: str
    api_key: str = field(repr=False)
    reference_namespace: str = ""

    @property
    def origin(self) -> tuple[str, str]:
        """(scheme, host:port) of the API: the only origin the API key is ever sent to."""
        return origin_of(self.base_url)


def origin_of(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return parts.scheme.lower(), f"{(parts.hostname or '').lower()}:{port}"


def parse_base_url(
    host: str | None,
    conn_id: str,
    port: int | None = None,
    *,
    schema: str | None = None,
    scheme: str | None = None,
) -> str:
    """Turn the connection's ``host`` into a base URL (no trailing slash).

    Empty means the public API. A host without a scheme gets ``scheme`` (the connection extra
    ``scheme``: ``http`` for a local simulator), else https. The connection's ``port`` is used only
    when the host does not already name one, and its ``schema`` is the path prefix when the host has
    no path: that is how Airflow stores a URI-form connection such as
    ``chamelaion://:KEY@api.chamelaion.com/api`` (host ``api.chamelaion.com``, schema ``api``).
    """
    raw = (host or "").strip()
    if not raw:
        return DEFAULT_BASE_URL
    default_scheme = (scheme or "https").strip().lower()
    if default_scheme not in ("http", "https"):
        raise ChamelaionConfigError(
            f"Chamelaion connection {conn_id!r} has extra scheme={scheme!r}: use http or https"
        )
    if "://" not in raw:
        raw = f"{default_scheme}://{raw}"
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
    path = parts.path.rstrip("/")
    if not path and schema and schema.strip("/"):
        path = "/" + schema.strip("/")
    return f"{parts.scheme}://{netloc}{path}"


def _extras(conn: Any, conn_id: str) -> dict[str, Any]:
    try:
        extras = getattr(conn, "extra_dejson", None) or {}
    except Exception as err:  # a malformed extra JSON
        raise ChamelaionConfigError(
            f"Chamelaion connection {conn_id!r} has a malformed extra: {err}"
        ) from None
    return dict(extras) if isinstance(extras, dict) else {}


def settings_from_connection(conn: Any, conn_id: str) -> ApiSettings:
    """Validate an Airflow ``Connection`` (JSON or URI form) and return its :class:`ApiSettings`."""
    api_key = (conn.password or "").strip()
    if not api_key:
        raise ChamelaionConfigError(
            f"Chamelaion connection {conn_id!r} has no API key: put the key in the connection's "
            "password field (shown as 'API key' in the UI)"
        )
    extras = _extras(conn, conn_id)
    # The connection form may store its custom fields with the prefix older Airflow forms used.
    namespace = extras.get(NAMESPACE_EXTRA) or extras.get(f"extra__chamelaion__{NAMESPACE_EXTRA}") or ""
    if not isinstance(namespace, str):
        raise ChamelaionConfigError(
            f"Chamelaion connection {conn_id!r}: extra {NAMESPACE_EXTRA} must be a string, got {namespace!r}"
        )
    base_url = parse_base_url(
        conn.host,
        conn_id,
        conn.port,
        schema=getattr(conn, "schema", None),
        scheme=extras.get(SCHEME_EXTRA),
    )
    return ApiSettings(base_url=base_url, api_key=api_key, reference_namespace=namespace.strip())


def connection_env_var(conn_id: str) -> str:
    """The environment variable Airflow reads connection ``conn_id`` from (``AIRFLOW_CONN_<ID>``)."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def missing_connection_error(conn_id: str) -> ChamelaionConfigError:
    env_name = connection_env_var(conn_id)
    return ChamelaionConfigError(
        f"Chamelaion connection {conn_id!r} is not defined: create it in the UI, or set {env_name}="
        '\'{"conn_type": "chamelaion", "host": "https://api.chamelaion.com/api", "password": "<key>"}\''
    )
