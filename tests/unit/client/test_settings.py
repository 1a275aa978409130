"""Reading the Airflow connection: base URL normalisation, API key, and helpful errors."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_chamelaion.client.settings import (
    ApiSettings,
    origin_of,
    parse_base_url,
    settings_from_connection,
)
from airflow_provider_chamelaion.exceptions import ChamelaionConfigError
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from tests.harness.constants import API_KEY

PUBLIC_API = "https://api.chamelaion.com/api"


def _set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str = "chamelaion_default", **fields: Any) -> None:
    payload = {"conn_type": "chamelaion", **fields}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(payload))


def _settings(
    monkeypatch: pytest.MonkeyPatch, conn_id: str = "chamelaion_default", **fields: Any
) -> ApiSettings:
    _set_conn(monkeypatch, conn_id, **fields)
    return ChamelaionHook(conn_id).get_settings()


class TestJsonConnection:
    def test_default_connection_from_json_env_var(self, monkeypatch: pytest.MonkeyPatch) -> None:
        settings = _settings(monkeypatch, host="https://api.chamelaion.test/api", password=API_KEY)
        assert settings.base_url == "https://api.chamelaion.test/api"
        assert settings.api_key == API_KEY

    def test_named_connection(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _set_conn(monkeypatch, "chamelaion_default", host="https://wrong.test", password="sk-wrong-key-000")
        settings = _settings(
            monkeypatch, "my_chamelaion", host="https://eu.chamelaion.test/api", password=API_KEY
        )
        assert settings == ApiSettings(base_url="https://eu.chamelaion.test/api", api_key=API_KEY)

    def test_key_whitespace_is_stripped(self, monkeypatch: pytest.MonkeyPatch) -> None:
        settings = _settings(monkeypatch, host="https://x.test/api", password=f"  {API_KEY}\n")
        assert settings.api_key == API_KEY

    def test_settings_are_looked_up_once_per_hook(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _set_conn(monkeypatch, host="https://x.test/api", password=API_KEY)
        hook = ChamelaionHook()
        calls: list[str] = []
        original = ChamelaionHook.get_connection

        def counting(conn_id: str) -> Any:
            calls.append(conn_id)
            return original(conn_id)

        monkeypatch.setattr(hook, "get_connection", counting)
        first = hook.get_settings()
        assert hook.get_settings() is first
        assert calls == ["chamelaion_default"]


class TestBaseUrl:
    @pytest.mark.parametrize("host", [None, "", "   "])
    def test_empty_host_means_the_public_api(self, monkeypatch: pytest.MonkeyPatch, host: str | None) -> None:
        fields: dict[str, Any] = {"password": API_KEY}
        if host is not None:
            fields["host"] = host
        assert _settings(monkeypatch, **fields).base_url == PUBLIC_API

    def test_parse_base_url_empty(self) -> None:
        assert parse_base_url(None, "c") == PUBLIC_API
        assert parse_base_url("", "c") == PUBLIC_API

    @pytest.mark.parametrize(
        ("host", "expected"),
        [
            ("api.chamelaion.test/api", "https://api.chamelaion.test/api"),
            ("api.chamelaion.test", "https://api.chamelaion.test"),
            ("localhost:8080/api", "https://localhost:8080/api"),
        ],
    )
    def test_host_without_scheme_means_https(
        self, monkeypatch: pytest.MonkeyPatch, host: str, expected: str
    ) -> None:
        assert _settings(monkeypatch, host=host, password=API_KEY).base_url == expected

    def test_http_scheme_is_kept(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert _settings(monkeypatch, host="http://127.0.0.1:9000/api", password=API_KEY).base_url == (
            "http://127.0.0.1:9000/api"
        )

    @pytest.mark.parametrize(
        ("host", "expected"),
        [
            ("https://api.chamelaion.test/api/", "https://api.chamelaion.test/api"),
            ("https://api.chamelaion.test/api///", "https://api.chamelaion.test/api"),
            ("https://api.chamelaion.test/", "https://api.chamelaion.test"),
            ("api.chamelaion.test/api/", "https://api.chamelaion.test/api"),
            ("  https://api.chamelaion.test/api  ", "https://api.chamelaion.test/api"),
        ],
    )
    def test_trailing_slash_stripped(self, monkeypatch: pytest.MonkeyPatch, host: str, expected: str) -> None:
        assert _settings(monkeypatch, host=host, password=API_KEY).base_url == expected

    @pytest.mark.parametrize(
        ("host", "expected"),
        [
            ("localhost/api", "https://localhost:8443/api"),
            ("http://127.0.0.1/api", "http://127.0.0.1:8443/api"),
            ("https://api.chamelaion.test", "https://api.chamelaion.test:8443"),
        ],
    )
    def test_port_field_used_when_host_has_none(
        self, monkeypatch: pytest.MonkeyPatch, host: str, expected: str
    ) -> None:
        assert _settings(monkeypatch, host=host, port=8443, password=API_KEY).base_url == expected

    def test_port_in_host_wins_over_port_field(self, monkeypatch: pytest.MonkeyPatch) -> None:
        settings = _settings(monkeypatch, host="http://127.0.0.1:9000/api", port=8443, password=API_KEY)
        assert settings.base_url == "http://127.0.0.1:9000/api"

    @pytest.mark.parametrize(
        ("host", "problem"),
        [
            ("ftp://files.chamelaion.test/api", "scheme 'ftp' is not http or https"),
            ("s3://bucket/api", "scheme 's3' is not http or https"),
            ("https://", "names no host"),
            ("https:///api", "names no host"),
            ("https://api.chamelaion.test:99999/api", "port"),
            ("https://api.chamelaion.test:abc/api", "port"),
            ("https://api.chamelaion.test/api?key=1", "query string"),
            ("https://api.chamelaion.test/api#frag", "fragment"),
        ],
    )
    def test_malformed_base_url_names_the_connection(
        self, monkeypatch: pytest.MonkeyPatch, host: str, problem: str
    ) -> None:
        _set_conn(monkeypatch, "chamelaion_eu", host=host, password=API_KEY)
        with pytest.raises(ChamelaionConfigError) as info:
            ChamelaionHook("chamelaion_eu").get_settings()
        message = str(info.value)
        assert "'chamelaion_eu'" in message
        assert "malformed Base URL" in message
        assert problem in message
        assert API_KEY not in message

    def test_parse_base_url_directly(self) -> None:
        with pytest.raises(ChamelaionConfigError, match="'my_conn'"):
            parse_base_url("ftp://x.test", "my_conn")
        assert parse_base_url("x.test/api/", "c", 8080) == "https://x.test:8080/api"


class TestApiKey:
    @pytest.mark.parametrize("password", [None, "", "   "])
    def test_missing_key_names_the_connection(
        self, monkeypatch: pytest.MonkeyPatch, password: str | None
    ) -> None:
        fields: dict[str, Any] = {"host": "https://api.chamelaion.test/api"}
        if password is not None:
            fields["password"] = password
        _set_conn(monkeypatch, "chamelaion_nokey", **fields)
        with pytest.raises(ChamelaionConfigError) as info:
            ChamelaionHook("chamelaion_nokey").get_settings()
        assert "'chamelaion_nokey'" in str(info.value)
        assert "no API key" in str(info.value)

    def test_missing_key_checked_before_base_url(self) -> None:
        conn = SimpleNamespace(host="ftp://bad", password=None, port=None)
        with pytest.raises(ChamelaionConfigError, match="no API key"):
            settings_from_connection(conn, "c")

    def test_settings_from_connection(self) -> None:
        conn = SimpleNamespace(host="api.chamelaion.test/api/", password=API_KEY, port=None)
        assert settings_from_connection(conn, "c") == ApiSettings("https://api.chamelaion.test/api", API_KEY)


class TestMissingConnection:
    def test_names_the_id_and_the_env_var(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AIRFLOW_CONN_CHAMELAION_NOWHERE", raising=False)
        with pytest.raises(ChamelaionConfigError) as info:
            ChamelaionHook("chamelaion_nowhere").get_settings()
        message = str(info.value)
        assert "'chamelaion_nowhere'" in message
        assert "is not defined" in message
        assert "AIRFLOW_CONN_CHAMELAION_NOWHERE" in message
        # The hint is a working example of the JSON form.
        example = message.split("AIRFLOW_CONN_CHAMELAION_NOWHERE=", 1)[1].strip("'")
        assert json.loads(example)["conn_type"] == "chamelaion"

    def test_default_connection_missing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", raising=False)
        with pytest.raises(ChamelaionConfigError, match="AIRFLOW_CONN_CHAMELAION_DEFAULT"):
            ChamelaionHook().get_settings()

    def test_is_a_value_error_for_callers(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AIRFLOW_CONN_CHAMELAION_NOWHERE", raising=False)
        with pytest.raises(ValueError, match="chamelaion_nowhere"):
            ChamelaionHook("chamelaion_nowhere").get_settings()


class TestApiSettings:
    def test_repr_and_str_hide_the_key(self) -> None:
        settings = ApiSettings(base_url="https://api.chamelaion.test/api", api_key=API_KEY)
        assert API_KEY not in repr(settings)
        assert API_KEY not in str(settings)
        assert "https://api.chamelaion.test/api" in repr(settings)

    @pytest.mark.parametrize(
        ("url", "origin"),
        [
            ("https://api.chamelaion.test/api", ("https", "api.chamelaion.test:443")),
            ("https://API.Chamelaion.TEST:443/other", ("https", "api.chamelaion.test:443")),
            ("http://api.chamelaion.test/api", ("http", "api.chamelaion.test:80")),
            ("http://127.0.0.1:9000/api", ("http", "127.0.0.1:9000")),
        ],
    )
    def test_origin(self, url: str, origin: tuple[str, str]) -> None:
        assert origin_of(url) == origin

    def test_origin_distinguishes_port_scheme_and_host(self) -> None:
        settings = ApiSettings(base_url="https://api.chamelaion.test/api", api_key=API_KEY)
        assert settings.origin == origin_of("https://api.chamelaion.test/outputs/x.mp4")
        assert settings.origin != origin_of("http://api.chamelaion.test/api")
        assert settings.origin != origin_of("https://api.chamelaion.test:8443/api")
        assert settings.origin != origin_of("https://storage.chamelaion.test/api")


class TestUriConnection:
    """URI form, as secrets backends and environment variables often hold it."""

    @pytest.mark.parametrize(
        ("uri", "expected"),
        [
            ("chamelaion://:KEY-0123456789@api.chamelaion.com/api", "https://api.chamelaion.com/api"),
            ("chamelaion://:KEY-0123456789@api.chamelaion.com", "https://api.chamelaion.com"),
            (
                "chamelaion://:KEY-0123456789@eu.chamelaion.test:8443/api",
                "https://eu.chamelaion.test:8443/api",
            ),
            # a local simulator over plain http: the scheme as an extra ...
            ("chamelaion://:KEY-0123456789@127.0.0.1:8089/api?scheme=http", "http://127.0.0.1:8089/api"),
            # ... or a host that already is a full URL, percent-encoded
            ("chamelaion://:KEY-0123456789@http%3A%2F%2F127.0.0.1%3A8089%2Fapi", "http://127.0.0.1:8089/api"),
        ],
        ids=["public", "no-path", "port", "scheme-extra", "encoded-url-host"],
    )
    def test_uri_form_keeps_the_base_path(
        self, monkeypatch: pytest.MonkeyPatch, uri: str, expected: str
    ) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CHAMELAION_URI", uri)
        settings = ChamelaionHook("chamelaion_uri").get_settings()
        assert settings.base_url == expected
        assert settings.api_key == "KEY-0123456789"

    def test_uri_form_reaches_the_api(self, monkeypatch: pytest.MonkeyPatch, simulator: Any) -> None:
        uri = f"chamelaion://:{API_KEY}@127.0.0.1:{simulator.port}/api?scheme=http"
        monkeypatch.setenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", uri)
        ok, message = ChamelaionHook().test_connection()
        assert ok, message
        assert simulator.state.calls_to("GET", "^/api/v1/lipsync/requests$")

    def test_bad_scheme_extra_names_the_connection(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_CHAMELAION_URI", "chamelaion://:KEY-0123456789@x.test/api?scheme=ftp"
        )
        with pytest.raises(ChamelaionConfigError, match=r"'chamelaion_uri'.*scheme='ftp'"):
            ChamelaionHook("chamelaion_uri").get_settings()

    def test_json_form_path_wins_over_schema(self) -> None:
        assert parse_base_url("https://x.test/api", "c", schema="other") == "https://x.test/api"
        assert parse_base_url("x.test", "c", schema="api") == "https://x.test/api"


class TestReferenceNamespace:
    def test_absent_means_none(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert _settings(monkeypatch, host="https://x.test/api", password=API_KEY).reference_namespace == ""

    def test_json_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        settings = _settings(
            monkeypatch,
            host="https://x.test/api",
            password=API_KEY,
            extra={"reference_namespace": " staging "},
        )
        assert settings.reference_namespace == "staging"

    def test_uri_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_CHAMELAION_URI", "chamelaion://:KEY-0123456789@x.test/api?reference_namespace=prod"
        )
        assert ChamelaionHook("chamelaion_uri").get_settings().reference_namespace == "prod"

    def test_form_prefixed_extra(self) -> None:
        conn = SimpleNamespace(
            host="x.test",
            password=API_KEY,
            port=None,
            extra_dejson={"extra__chamelaion__reference_namespace": "qa"},
        )
        assert settings_from_connection(conn, "c").reference_namespace == "qa"

    def test_not_a_string_is_refused(self) -> None:
        conn = SimpleNamespace(
            host="x.test", password=API_KEY, port=None, extra_dejson={"reference_namespace": 7}
        )
        with pytest.raises(ChamelaionConfigError, match="reference_namespace must be a string"):
            settings_from_connection(conn, "c")
