"""ChamelaionHook.download_output: streamed, atomic, key only to the API's origin."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import pytest
import requests
from requests_mock import Mocker

from airflow_provider_chamelaion.exceptions import (
    ChamelaionAuthError,
    ChamelaionConfigError,
    ChamelaionError,
    ChamelaionTransportError,
)
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from tests.harness.constants import API_KEY, MOCK_BASE_URL
from tests.harness.mock_api import (
    OUTPUT,
    REQUEST_ID,
    REQUEST_URL,
    STORAGE_URL,
    _completed,
    _last,
    _request_json,
)

# -- downloads ------------------------------------------------------------------------------------


class TestDownloadOutput:
    def test_writes_the_file(self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path) -> None:
        requests_mock.get(STORAGE_URL, content=OUTPUT, headers={"Content-Length": str(len(OUTPUT))})
        destination = tmp_path / "out.mp4"
        assert hook.download_output(_completed(), destination) == destination
        assert destination.read_bytes() == OUTPUT
        assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
        assert requests_mock.call_count == 1
        assert _last(requests_mock).headers["Accept-Encoding"] == "identity"

    def test_by_id_fetches_the_request_first(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(REQUEST_URL, json=_request_json())
        requests_mock.get(STORAGE_URL, content=OUTPUT)
        hook.download_output(REQUEST_ID, tmp_path / "o.mp4")
        assert [r.url for r in requests_mock.request_history] == [REQUEST_URL, STORAGE_URL]
        assert (tmp_path / "o.mp4").read_bytes() == OUTPUT

    def test_atomic_temp_file_then_rename(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        destination = tmp_path / "out.mp4"
        observed: list[tuple[bool, list[str]]] = []

        class ObservingBody(io.BytesIO):
            def read(self, size: int | None = -1) -> bytes:
                observed.append((destination.exists(), sorted(p.name for p in tmp_path.iterdir())))
                return super().read(size)

        replaced: list[tuple[str, str]] = []
        real_replace = os.replace

        def spy_replace(src: Any, dst: Any) -> None:
            replaced.append((os.fspath(src), os.fspath(dst)))
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", spy_replace)
        requests_mock.get(
            STORAGE_URL, body=ObservingBody(OUTPUT), headers={"Content-Length": str(len(OUTPUT))}
        )
        hook.download_output(_completed(), destination)

        assert observed
        for exists, names in observed:
            assert not exists  # the final name appears only once the file is complete
            assert len(names) == 1
            # hidden, and short whatever the final name's length (which may be up to 255 bytes itself)
            assert re.fullmatch(r"\.chamelaion-[0-9a-f]{16}\.part", names[0])
        assert len(replaced) == 1
        source, target = replaced[0]
        assert Path(source).parent == tmp_path
        assert Path(source).name.endswith(".part")
        assert target == str(destination)
        assert destination.read_bytes() == OUTPUT
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]

    def test_size_mismatch_leaves_nothing(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(STORAGE_URL, content=OUTPUT[:100], headers={"Content-Length": str(len(OUTPUT))})
        destination = tmp_path / "out.mp4"
        with pytest.raises(ChamelaionTransportError, match=f"100 of {len(OUTPUT)} bytes"):
            hook.download_output(_completed(), destination)
        assert list(tmp_path.iterdir()) == []
        # A truncated download is a transport failure: retried like any GET, up to max_attempts.
        assert requests_mock.call_count == hook.retry_policy.max_attempts

    def test_size_mismatch_keeps_an_existing_file(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        destination = tmp_path / "out.mp4"
        destination.write_bytes(b"previous output")
        requests_mock.get(STORAGE_URL, content=b"abc", headers={"Content-Length": "10"})
        with pytest.raises(ChamelaionTransportError):
            hook.download_output(_completed(), destination)
        assert destination.read_bytes() == b"previous output"
        assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]

    def test_truncated_then_complete(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path, sleeps: Any
    ) -> None:
        requests_mock.get(
            STORAGE_URL,
            [
                {"content": OUTPUT[:10], "headers": {"Content-Length": str(len(OUTPUT))}},
                {"content": OUTPUT, "headers": {"Content-Length": str(len(OUTPUT))}},
            ],
        )
        hook.download_output(_completed(), tmp_path / "o.mp4")
        assert (tmp_path / "o.mp4").read_bytes() == OUTPUT
        assert requests_mock.call_count == 2
        assert len(sleeps) == 1

    def test_directory_destination_gets_the_output_name(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(STORAGE_URL + "?X-Amz-Signature=abc", content=OUTPUT)
        written = hook.download_output(_completed(STORAGE_URL + "?X-Amz-Signature=abc"), tmp_path)
        assert written == tmp_path / "6f82a2d8.mp4"
        assert written.read_bytes() == OUTPUT

    def test_trailing_slash_destination_is_created(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(STORAGE_URL, content=OUTPUT)
        written = hook.download_output(_completed(), f"{tmp_path}/new/dir/")
        assert written == tmp_path / "new" / "dir" / "6f82a2d8.mp4"
        assert written.read_bytes() == OUTPUT

    def test_output_url_without_file_name(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get("https://storage.chamelaion.test/", content=OUTPUT)
        written = hook.download_output(_completed("https://storage.chamelaion.test/"), tmp_path)
        assert written == tmp_path / f"{REQUEST_ID}.mp4"

    def test_no_api_key_for_another_host(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(STORAGE_URL, content=OUTPUT)
        hook.download_output(_completed(), tmp_path / "o.mp4")
        assert "x-api-key" not in _last(requests_mock).headers

    @pytest.mark.parametrize(
        "url",
        [
            "https://api.chamelaion.test:8443/api/outputs/o.mp4",
            "http://api.chamelaion.test/api/outputs/o.mp4",
            "https://evil.api.chamelaion.test/api/outputs/o.mp4",
            "https://api.chamelaion.test.evil.example/api/outputs/o.mp4",
        ],
    )
    def test_no_api_key_for_another_origin(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path, url: str
    ) -> None:
        requests_mock.get(url, content=OUTPUT)
        hook.download_output(_completed(url), tmp_path / "o.mp4")
        assert requests_mock.call_count == 1
        assert "x-api-key" not in _last(requests_mock).headers

    @pytest.mark.parametrize(
        "url",
        [
            f"{MOCK_BASE_URL}/v1/lipsync/outputs/{REQUEST_ID}.mp4",
            "https://API.chamelaion.test:443/files/o.mp4",
        ],
    )
    def test_api_key_sent_to_the_api_origin(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path, url: str
    ) -> None:
        requests_mock.get(url, content=OUTPUT)
        hook.download_output(_completed(url), tmp_path / "o.mp4")
        assert _last(requests_mock).headers["x-api-key"] == API_KEY

    def test_redirect_to_another_host_is_not_followed_with_the_key(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        api_url = f"{MOCK_BASE_URL}/v1/lipsync/outputs/o.mp4"
        requests_mock.get(api_url, status_code=302, headers={"Location": STORAGE_URL})
        requests_mock.get(STORAGE_URL, content=OUTPUT)
        hook.download_output(_completed(api_url), tmp_path / "o.mp4")
        assert (tmp_path / "o.mp4").read_bytes() == OUTPUT
        history = requests_mock.request_history
        assert [r.url for r in history] == [api_url, STORAGE_URL]
        assert history[0].headers["x-api-key"] == API_KEY
        assert "x-api-key" not in history[1].headers

    @pytest.mark.parametrize("status", [403, 404])
    def test_refused_output_url_refetches_the_request_once(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path, status: int
    ) -> None:
        expired = STORAGE_URL + "?sig=old"
        fresh = STORAGE_URL + "?sig=new"
        requests_mock.get(expired, status_code=status, text="<Error>AccessDenied</Error>")
        requests_mock.get(REQUEST_URL, json=_request_json(output_url=fresh))
        requests_mock.get(fresh, content=OUTPUT)
        written = hook.download_output(_completed(expired), tmp_path / "o.mp4")
        assert written.read_bytes() == OUTPUT
        assert [r.url for r in requests_mock.request_history] == [expired, REQUEST_URL, fresh]

    def test_refused_twice_gives_up_after_one_refetch(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(STORAGE_URL, status_code=403, text="denied")
        refetch = requests_mock.get(REQUEST_URL, json=_request_json())
        with pytest.raises(ChamelaionAuthError) as info:
            hook.download_output(_completed(STORAGE_URL + "?sig=secret-signature"), tmp_path / "o.mp4")
        assert refetch.call_count == 1
        assert requests_mock.call_count == 3
        assert info.value.status_code == 403
        assert "secret-signature" not in str(info.value)
        assert info.value.path == "/output/6f82a2d8.mp4"
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("status", ["queued", "running", "failed"])
    def test_request_without_output_url(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path, status: str
    ) -> None:
        with pytest.raises(ChamelaionError) as info:
            hook.download_output(_completed(None, status=status), tmp_path / "o.mp4")
        message = str(info.value)
        assert REQUEST_ID in message
        assert repr(status) in message
        assert "no output_url" in message
        assert requests_mock.call_count == 0
        assert list(tmp_path.iterdir()) == []

    def test_request_id_without_output_url(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(REQUEST_URL, json=_request_json(status="queued", output_url=None))
        with pytest.raises(ChamelaionError, match="'queued'"):
            hook.download_output(REQUEST_ID, tmp_path / "o.mp4")
        assert requests_mock.call_count == 1

    @pytest.mark.parametrize("destination", [None, "", "  ", 42])
    def test_bad_destination_fails_before_any_call(
        self, hook: ChamelaionHook, requests_mock: Mocker, destination: Any
    ) -> None:
        with pytest.raises(ChamelaionConfigError, match="destination"):
            hook.download_output(REQUEST_ID, destination)
        assert requests_mock.call_count == 0

    @pytest.mark.parametrize(
        "failure",
        [
            {"exc": requests.exceptions.ConnectionError("connection reset by peer")},
            {"exc": requests.exceptions.ReadTimeout},
            {"status_code": 503, "text": "busy"},
            {"status_code": 500, "text": "oops"},
        ],
    )
    def test_dropped_download_is_retried(
        self,
        hook: ChamelaionHook,
        requests_mock: Mocker,
        tmp_path: Path,
        sleeps: Any,
        failure: dict[str, Any],
    ) -> None:
        requests_mock.get(STORAGE_URL, [failure, {"content": OUTPUT}])
        written = hook.download_output(_completed(), tmp_path / "o.mp4")
        assert written.read_bytes() == OUTPUT
        assert requests_mock.call_count == 2
        assert len(sleeps) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]


class TestOutputFileName:
    """The name an output gets in a directory destination: never a path, never '.' or '..'."""

    @pytest.mark.parametrize(
        ("output_path", "expected"),
        [
            ("/output/ja%20final.mp4", "ja final.mp4"),
            ("/output/%C3%A9pisode.mp4", "épisode.mp4"),
            ("/output/..", f"{REQUEST_ID}.mp4"),
            ("/output/%2E%2E", f"{REQUEST_ID}.mp4"),
            ("/output/.", f"{REQUEST_ID}.mp4"),
            ("/output/", f"{REQUEST_ID}.mp4"),
            ("/output/..%2F..%2Fetc%2Fpasswd", f"{REQUEST_ID}.mp4"),
            ("/output/a%5Cb.mp4", f"{REQUEST_ID}.mp4"),
            ("/output/x%0A.mp4", f"{REQUEST_ID}.mp4"),
        ],
        ids=[
            "space",
            "utf8",
            "dot-dot",
            "encoded-dot-dot",
            "dot",
            "empty",
            "encoded-slashes",
            "backslash",
            "newline",
        ],
    )
    @pytest.mark.parametrize("uri", [False, True], ids=["local-dir", "file-uri-dir"])
    def test_written_inside_the_directory_under_a_safe_name(
        self,
        hook: ChamelaionHook,
        requests_mock: Mocker,
        tmp_path: Path,
        output_path: str,
        expected: str,
        uri: bool,
    ) -> None:
        requests_mock.get(re.compile(r"^https://storage\.chamelaion\.test/"), content=OUTPUT)
        directory = tmp_path / "outputs"
        directory.mkdir()
        destination: Any = f"file://{directory}" if uri else directory
        written = hook.download_output(
            _completed(f"https://storage.chamelaion.test{output_path}?sig=1"), destination
        )

        assert os.listdir(directory) == [expected]
        assert (directory / expected).read_bytes() == OUTPUT
        assert str(written).endswith(f"{directory}/{expected}")
        assert sorted(os.listdir(tmp_path)) == ["outputs"]

    def test_fails_loudly_when_nothing_is_where_it_says(
        self, hook: ChamelaionHook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(
            hook, "_download_once", lambda url, target, *rest: None
        )  # "succeeds", writes nothing
        with pytest.raises(ChamelaionError, match=rf"{REQUEST_ID}.*is not a file"):
            hook.download_output(_completed(), tmp_path / "out.mp4")
