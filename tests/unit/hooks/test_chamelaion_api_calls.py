"""ChamelaionHook's sync API calls against requests-mock: generate, get, list, iterate, find, test_connection, session."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from requests_mock import Mocker

from airflow_provider_chamelaion.client.models import LipsyncRequest, RequestPage
from airflow_provider_chamelaion.client.retry import RetryPolicy
from airflow_provider_chamelaion.exceptions import (
    ChamelaionConfigError,
    ChamelaionResponseError,
)
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from tests.harness.constants import API_KEY, MOCK_BASE_URL
from tests.harness.mock_api import (
    ACCEPTED,
    AUDIO_URL,
    GENERATE_URL,
    REQUEST_ID,
    REQUEST_URL,
    REQUESTS_URL,
    STORAGE_URL,
    VIDEO_URL,
    _item,
    _last,
    _page,
    _path,
    _query,
    _request_json,
)

# -- generate -------------------------------------------------------------------------------------


class TestGenerate:
    def test_minimal_call(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.post(GENERATE_URL, json=ACCEPTED)
        assert hook.generate(VIDEO_URL, AUDIO_URL) == REQUEST_ID
        assert requests_mock.call_count == 1
        sent = _last(requests_mock)
        assert sent.method == "POST"
        assert sent.url == GENERATE_URL
        assert sent.headers["x-api-key"] == API_KEY
        assert sent.headers["Content-Type"] == "application/json"
        assert sent.json() == {
            "inputs": [{"type": "video", "url": VIDEO_URL}, {"type": "audio", "url": AUDIO_URL}]
        }

    @pytest.mark.parametrize(
        ("kwargs", "extra"),
        [
            ({"reference_id": "dub-episode-42"}, {"reference_id": "dub-episode-42"}),
            ({"disable_active_speaker_detection": True}, {"disable_active_speaker_detection": True}),
            ({"disable_active_speaker_detection": False}, {"disable_active_speaker_detection": False}),
            (
                {"reference_id": "ep:42_v2.1", "disable_active_speaker_detection": True},
                {"reference_id": "ep:42_v2.1", "disable_active_speaker_detection": True},
            ),
            ({"reference_id": None, "disable_active_speaker_detection": None}, {}),
        ],
    )
    def test_optional_fields_only_when_given(
        self, hook: ChamelaionHook, requests_mock: Mocker, kwargs: dict[str, Any], extra: dict[str, Any]
    ) -> None:
        requests_mock.post(GENERATE_URL, json=ACCEPTED)
        hook.generate(VIDEO_URL, AUDIO_URL, **kwargs)
        assert _last(requests_mock).json() == {
            "inputs": [{"type": "video", "url": VIDEO_URL}, {"type": "audio", "url": AUDIO_URL}],
            **extra,
        }

    def test_answer_without_request_id(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.post(GENERATE_URL, json={"status": "success"})
        with pytest.raises(ChamelaionResponseError, match="no request_id") as info:
            hook.generate(VIDEO_URL, AUDIO_URL)
        assert info.value.path == "/v1/lipsync/generate"
        assert requests_mock.call_count == 1

    @pytest.mark.parametrize(
        "bad_url",
        [
            "ftp://cdn.example.com/v.mp4",
            "s3://bucket/v.mp4",
            "file:///data/v.mp4",
            "/data/v.mp4",
            "videos/v.mp4",
            "",
            "   ",
            "https://",
            "cdn.example.com/v.mp4",
        ],
    )
    @pytest.mark.parametrize("which", ["video_url", "audio_url"])
    def test_rejects_non_http_urls_before_any_call(
        self, hook: ChamelaionHook, requests_mock: Mocker, bad_url: str, which: str
    ) -> None:
        urls = {"video_url": VIDEO_URL, "audio_url": AUDIO_URL, which: bad_url}
        with pytest.raises(ChamelaionConfigError, match=which):
            hook.generate(urls["video_url"], urls["audio_url"])
        assert requests_mock.call_count == 0

    @pytest.mark.parametrize("reference_id", ["a/b", "/lead", "", "  ", "tab\tinside", "nl\n"])
    def test_rejects_bad_reference_id_before_any_call(
        self, hook: ChamelaionHook, requests_mock: Mocker, reference_id: str
    ) -> None:
        with pytest.raises(ChamelaionConfigError, match="reference_id"):
            hook.generate(VIDEO_URL, AUDIO_URL, reference_id=reference_id)
        assert requests_mock.call_count == 0

    @pytest.mark.parametrize("flag", ["yes", 1, 0, "false"])
    def test_rejects_non_bool_speaker_flag(
        self, hook: ChamelaionHook, requests_mock: Mocker, flag: Any
    ) -> None:
        with pytest.raises(ChamelaionConfigError, match="disable_active_speaker_detection"):
            hook.generate(VIDEO_URL, AUDIO_URL, disable_active_speaker_detection=flag)
        assert requests_mock.call_count == 0


# -- get / list / iterate / find ------------------------------------------------------------------


class TestGetRequest:
    def test_exact_call_and_parsed_answer(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUEST_URL, json=_request_json(reference_id="dub-42", extra_field=1))
        request = hook.get_request(REQUEST_ID)
        assert request == LipsyncRequest(
            id=REQUEST_ID,
            status="completed",
            created_at="2026-04-07T10:00:00Z",
            output_url=STORAGE_URL,
            reference_id="dub-42",
        )
        assert requests_mock.call_count == 1
        sent = _last(requests_mock)
        assert sent.method == "GET"
        assert sent.url == REQUEST_URL
        assert sent.headers["x-api-key"] == API_KEY

    @pytest.mark.parametrize(
        ("request_id", "segment"),
        [
            ("dub episode 42", "dub%20episode%2042"),
            ("ep?42#x", "ep%3F42%23x"),
            ("a%2Fb", "a%252Fb"),
            ("Dub:42&lang=ja", "Dub%3A42%26lang%3Dja"),
            ("épisode", "%C3%A9pisode"),
        ],
    )
    def test_id_is_escaped_as_one_path_segment(
        self, hook: ChamelaionHook, requests_mock: Mocker, request_id: str, segment: str
    ) -> None:
        requests_mock.get(f"{REQUESTS_URL}/{segment}", json=_item(request_id))
        assert hook.get_request(request_id).id == request_id
        assert _path(_last(requests_mock)) == f"/api/v1/lipsync/requests/{segment}"
        assert urlsplit(_last(requests_mock).url).query == ""

    @pytest.mark.parametrize("request_id", ["a/b", "", "../other", "x\x00"])
    def test_rejects_bad_id_before_any_call(
        self, hook: ChamelaionHook, requests_mock: Mocker, request_id: str
    ) -> None:
        with pytest.raises(ChamelaionConfigError, match="request_id"):
            hook.get_request(request_id)
        assert requests_mock.call_count == 0

    def test_wrong_shape_is_a_response_error(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUEST_URL, json={"id": REQUEST_ID})
        with pytest.raises(ChamelaionResponseError, match="missing status") as info:
            hook.get_request(REQUEST_ID)
        assert info.value.status_code == 200
        assert requests_mock.call_count == 1


class TestListRequests:
    def test_no_params_sends_no_query(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUESTS_URL, json=_page([_item("a")], total=1))
        page = hook.list_requests()
        assert isinstance(page, RequestPage)
        assert [r.id for r in page.data] == ["a"]
        sent = _last(requests_mock)
        assert sent.method == "GET"
        assert sent.url == REQUESTS_URL
        assert sent.headers["x-api-key"] == API_KEY

    @pytest.mark.parametrize(
        ("kwargs", "query"),
        [
            ({"limit": 10}, {"limit": ["10"]}),
            ({"offset": 0}, {"offset": ["0"]}),
            ({"offset": 40}, {"offset": ["40"]}),
            ({"reference_id": "Dub-42"}, {"reference_id": ["Dub-42"]}),
            (
                {"limit": 5, "offset": 10, "reference_id": "batch 2026/04"},
                {"limit": ["5"], "offset": ["10"], "reference_id": ["batch 2026/04"]},
            ),
            ({"limit": None, "offset": None, "reference_id": None}, {}),
        ],
    )
    def test_only_given_params_are_sent(
        self, hook: ChamelaionHook, requests_mock: Mocker, kwargs: dict[str, Any], query: dict[str, list[str]]
    ) -> None:
        requests_mock.get(REQUESTS_URL, json=_page([], total=0))
        hook.list_requests(**kwargs)
        assert _query(_last(requests_mock)) == query
        assert _path(_last(requests_mock)) == "/api/v1/lipsync/requests"

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"limit": 0},
            {"limit": -1},
            {"limit": True},
            {"limit": "10"},
            {"limit": 1.5},
            {"offset": -1},
            {"offset": False},
            {"offset": "0"},
            {"reference_id": ""},
        ],
    )
    def test_bad_params_fail_before_any_call(
        self, hook: ChamelaionHook, requests_mock: Mocker, kwargs: dict[str, Any]
    ) -> None:
        with pytest.raises(ChamelaionConfigError, match=next(iter(kwargs))):
            hook.list_requests(**kwargs)
        assert requests_mock.call_count == 0


class _PagedServer:
    """A list endpoint over ``items`` that honours limit/offset, clamping the page size to ``max_limit``."""

    def __init__(self, items: list[dict[str, Any]], max_limit: int = 1000) -> None:
        self.items = items
        self.max_limit = max_limit
        self.seen: list[dict[str, list[str]]] = []

    def __call__(self, request: Any, context: Any) -> dict[str, Any]:
        query = _query(request)
        self.seen.append(query)
        limit = min(int(query.get("limit", ["20"])[0]), self.max_limit)
        offset = int(query.get("offset", ["0"])[0])
        return _page(self.items[offset : offset + limit], total=len(self.items), limit=limit, offset=offset)


class TestIterRequests:
    def test_pages_until_total(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        server = _PagedServer([_item(f"r{i}") for i in range(5)])
        requests_mock.get(REQUESTS_URL, json=server)
        ids = [r.id for r in hook.iter_requests(page_size=2)]
        assert ids == ["r0", "r1", "r2", "r3", "r4"]
        assert server.seen == [
            {"limit": ["2"], "offset": ["0"]},
            {"limit": ["2"], "offset": ["2"]},
            {"limit": ["2"], "offset": ["4"]},
        ]

    def test_exact_multiple_needs_no_extra_call(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        server = _PagedServer([_item(f"r{i}") for i in range(4)])
        requests_mock.get(REQUESTS_URL, json=server)
        assert len(list(hook.iter_requests(page_size=2))) == 4
        assert requests_mock.call_count == 2

    def test_reference_id_sent_on_every_page(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        server = _PagedServer([_item(f"r{i}", reference_id="Batch-1") for i in range(3)])
        requests_mock.get(REQUESTS_URL, json=server)
        assert len(list(hook.iter_requests(reference_id="Batch-1", page_size=2))) == 3
        assert [q["reference_id"] for q in server.seen] == [["Batch-1"], ["Batch-1"]]

    def test_server_clamping_page_size(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        server = _PagedServer([_item(f"r{i}") for i in range(7)], max_limit=3)
        requests_mock.get(REQUESTS_URL, json=server)
        ids = [r.id for r in hook.iter_requests(page_size=100)]
        assert ids == [f"r{i}" for i in range(7)]
        assert [q["offset"] for q in server.seen] == [["0"], ["3"], ["6"]]

    def test_overlapping_pages_never_yield_an_id_twice(
        self, hook: ChamelaionHook, requests_mock: Mocker
    ) -> None:
        # A new request arrived between the two calls and pushed "b" onto the second page too.
        requests_mock.get(
            REQUESTS_URL,
            [
                {"json": _page([_item("a"), _item("b")], total=4, limit=2)},
                {"json": _page([_item("b"), _item("c")], total=5, limit=2, offset=2)},
                {"json": _page([_item("d")], total=5, limit=2, offset=4)},
            ],
        )
        ids = [r.id for r in hook.iter_requests(page_size=2)]
        assert ids == ["a", "b", "c", "d"]
        assert requests_mock.call_count == 3

    def test_stops_on_an_empty_page(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(
            REQUESTS_URL,
            [
                {"json": _page([_item("a"), _item("b")], total=10, limit=2)},
                {"json": _page([], total=10, limit=2, offset=2)},
                {"json": _page([_item("never")], total=10, limit=2, offset=2)},
            ],
        )
        assert [r.id for r in hook.iter_requests(page_size=2)] == ["a", "b"]
        assert requests_mock.call_count == 2

    def test_empty_account(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUESTS_URL, json=_page([], total=0))
        assert list(hook.iter_requests()) == []
        assert requests_mock.call_count == 1

    def test_is_lazy(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUESTS_URL, json=_PagedServer([_item(f"r{i}") for i in range(6)]))
        iterator = hook.iter_requests(page_size=2)
        assert next(iterator).id == "r0"
        assert requests_mock.call_count == 1

    @pytest.mark.parametrize("page_size", [0, -5, True])
    def test_bad_page_size_fails_before_any_call(
        self, hook: ChamelaionHook, requests_mock: Mocker, page_size: Any
    ) -> None:
        with pytest.raises(ChamelaionConfigError, match="limit"):
            list(hook.iter_requests(page_size=page_size))
        assert requests_mock.call_count == 0


class TestFindRequests:
    def test_exact_matches_newest_first(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        items = [
            _item("old", reference_id="dub-42", created_at="2026-03-30T11:00:00Z"),
            _item("prefix", reference_id="dub-420", created_at="2026-03-30T12:00:00Z"),
            _item("new", reference_id="dub-42", created_at="2026-03-30T11:02:00Z"),
            _item("other", reference_id=None, created_at="2026-03-31T11:02:00Z"),
        ]
        requests_mock.get(REQUESTS_URL, json=_page(items, total=4))
        found = hook.find_requests("dub-42")
        assert [r.id for r in found] == ["new", "old"]
        assert _query(_last(requests_mock))["reference_id"] == ["dub-42"]

    def test_no_match(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUESTS_URL, json=_page([], total=0))
        assert hook.find_requests("nothing") == []


class TestTestConnection:
    def test_ok(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUESTS_URL, json=_page([_item("a")], total=17, limit=1))
        ok, message = hook.test_connection()
        assert ok is True
        assert MOCK_BASE_URL in message
        assert "17" in message
        assert _query(_last(requests_mock)) == {"limit": ["1"]}
        assert _last(requests_mock).headers["x-api-key"] == API_KEY

    def test_bad_key(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUESTS_URL, status_code=401, json={"message": "Invalid API key"})
        ok, message = hook.test_connection()
        assert ok is False
        assert "Invalid API key" in message
        assert "401" in message
        assert API_KEY not in message
        assert requests_mock.call_count == 1

    def test_missing_connection(
        self, requests_mock: Mocker, monkeypatch: pytest.MonkeyPatch, retry_policy: RetryPolicy
    ) -> None:
        monkeypatch.delenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", raising=False)
        ok, message = ChamelaionHook(retry_policy=retry_policy).test_connection()
        assert ok is False
        assert "chamelaion_default" in message
        assert requests_mock.call_count == 0


# -- session --------------------------------------------------------------------------------------


class TestSession:
    def test_one_session_per_hook_with_user_agent(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUEST_URL, json=_request_json())
        hook.get_request(REQUEST_ID)
        hook.get_request(REQUEST_ID)
        assert hook.get_conn() is hook.get_conn()
        user_agents = {r.headers["User-Agent"] for r in requests_mock.request_history}
        assert len(user_agents) == 1
        assert next(iter(user_agents)).startswith("airflow-provider-chamelaion/")

    def test_close_drops_the_session(self, hook: ChamelaionHook) -> None:
        first = hook.get_conn()
        hook.close()
        assert hook.get_conn() is not first
