"""LipsyncRequest / RequestPage parsing and the status -> outcome mapping."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_provider_chamelaion.client.models import (
    FAILURE_STATUSES,
    SUCCESS_STATUSES,
    LipsyncRequest,
    Outcome,
    RequestPage,
    newest_first,
    outcome_of,
    parse_api_time,
)

#: The "Get lip sync request" example of the vendor reference.
COMPLETED: dict[str, Any] = {
    "id": "6f82a2d8-a6d4-4e8a-a0fa-e8b09823a2d8",
    "reference_id": "dub-episode-42",
    "status": "completed",
    "created_at": "2026-04-07T10:00:00Z",
    "started_at": "2026-04-07T10:00:05Z",
    "finished_at": "2026-04-07T10:01:30Z",
    "output_url": "https://storage.chamelaion.com/output/6f82a2d8.mp4",
}

API_FIELDS = {
    "id",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "output_url",
    "reference_id",
    "error_message",
}


class TestLipsyncRequestFromApi:
    def test_reads_every_documented_field(self) -> None:
        request = LipsyncRequest.from_api(COMPLETED)
        assert request.id == COMPLETED["id"]
        assert request.status == "completed"
        assert request.reference_id == "dub-episode-42"
        assert request.created_at == "2026-04-07T10:00:00Z"
        assert request.started_at == "2026-04-07T10:00:05Z"
        assert request.finished_at == "2026-04-07T10:01:30Z"
        assert request.output_url == COMPLETED["output_url"]
        assert request.error_message is None

    def test_failed_request_keeps_error_message(self) -> None:
        request = LipsyncRequest.from_api(
            {"id": "r1", "status": "failed", "created_at": "x", "error_message": "no face found"}
        )
        assert request.error_message == "no face found"
        assert request.outcome is Outcome.FAILED

    def test_ignores_unknown_fields(self) -> None:
        payload = {**COMPLETED, "progress": 0.5, "billing": {"credits": 3}, "new_field": None}
        request = LipsyncRequest.from_api(payload)
        assert request == LipsyncRequest.from_api(COMPLETED)
        assert not hasattr(request, "progress")
        assert set(request.to_dict()) == API_FIELDS

    def test_optional_fields_default_to_none(self) -> None:
        request = LipsyncRequest.from_api({"id": "r1", "status": "queued"})
        assert request.created_at is None
        assert request.output_url is None
        assert request.reference_id is None

    @pytest.mark.parametrize(
        ("payload", "missing"),
        [
            ({"status": "queued"}, "id"),
            ({"id": "r1"}, "status"),
            ({"id": "", "status": "queued"}, "id"),
            ({"id": "r1", "status": None}, "status"),
            ({}, "id, status"),
        ],
    )
    def test_requires_id_and_status(self, payload: dict[str, Any], missing: str) -> None:
        with pytest.raises(ValueError, match=f"missing {missing}"):
            LipsyncRequest.from_api(payload)

    @pytest.mark.parametrize("payload", [None, [], "r1", 3])
    def test_rejects_non_objects(self, payload: Any) -> None:
        with pytest.raises(ValueError, match="expected a JSON object"):
            LipsyncRequest.from_api(payload)

    def test_non_string_values_become_strings(self) -> None:
        request = LipsyncRequest.from_api({"id": 123, "status": "queued", "created_at": 1700000000})
        assert request.id == "123"
        assert request.created_at == "1700000000"


class TestToDict:
    def test_uses_api_field_names(self) -> None:
        as_dict = LipsyncRequest.from_api(COMPLETED).to_dict()
        assert set(as_dict) == API_FIELDS
        assert {key: as_dict[key] for key in COMPLETED} == COMPLETED
        assert as_dict["error_message"] is None

    def test_round_trips_through_json(self) -> None:
        request = LipsyncRequest.from_api(COMPLETED)
        through_json = json.loads(json.dumps(request.to_dict()))
        assert LipsyncRequest.from_api(through_json) == request

    def test_round_trips_minimal_request(self) -> None:
        request = LipsyncRequest(id="r1", status="queued")
        assert LipsyncRequest.from_api(json.loads(json.dumps(request.to_dict()))) == request

    def test_is_a_plain_dict_of_strings_or_none(self) -> None:
        as_dict = LipsyncRequest.from_api(COMPLETED).to_dict()
        assert type(as_dict) is dict
        assert all(value is None or type(value) is str for value in as_dict.values())


class TestOutcome:
    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            ("completed", Outcome.SUCCEEDED),
            ("complete", Outcome.SUCCEEDED),
            ("succeeded", Outcome.SUCCEEDED),
            ("failed", Outcome.FAILED),
            ("failure", Outcome.FAILED),
            ("error", Outcome.FAILED),
            ("errored", Outcome.FAILED),
            ("cancelled", Outcome.FAILED),
            ("canceled", Outcome.FAILED),
            ("rejected", Outcome.FAILED),
            ("expired", Outcome.FAILED),
            ("queued", Outcome.RUNNING),
            ("running", Outcome.RUNNING),
            ("processing", Outcome.RUNNING),
        ],
    )
    def test_known_statuses(self, status: str, expected: Outcome) -> None:
        assert outcome_of(status) is expected

    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            ("COMPLETED", Outcome.SUCCEEDED),
            ("Completed", Outcome.SUCCEEDED),
            ("  completed\n", Outcome.SUCCEEDED),
            ("FAILED", Outcome.FAILED),
            ("Cancelled", Outcome.FAILED),
            (" Error ", Outcome.FAILED),
        ],
    )
    def test_case_and_whitespace_insensitive(self, status: str, expected: Outcome) -> None:
        assert outcome_of(status) is expected

    @pytest.mark.parametrize("status", ["success", "Success", "SUCCESS"])
    def test_success_is_not_a_success_status(self, status: str) -> None:
        # The generate call answers "success" for a job that was only accepted.
        assert outcome_of(status) is Outcome.RUNNING
        assert "success" not in SUCCESS_STATUSES
        assert not LipsyncRequest(id="r1", status=status).is_terminal

    @pytest.mark.parametrize("status", ["paused", "uploading", "in_progress", "", None, "   "])
    def test_unknown_statuses_mean_running(self, status: str | None) -> None:
        assert outcome_of(status) is Outcome.RUNNING

    def test_success_and_failure_sets_are_disjoint(self) -> None:
        assert not SUCCESS_STATUSES & FAILURE_STATUSES

    def test_request_outcome_and_terminal(self) -> None:
        assert LipsyncRequest(id="r", status="completed").is_terminal
        assert LipsyncRequest(id="r", status="Failed").is_terminal
        assert not LipsyncRequest(id="r", status="queued").is_terminal
        assert LipsyncRequest(id="r", status="completed").outcome is Outcome.SUCCEEDED


class TestRequestPage:
    def test_reference_example(self) -> None:
        payload = {
            "data": [
                {
                    "id": "6f82a2d8-a6d4-4e8a-a0fa-e8b09823a2d8",
                    "reference_id": "batch-2026-04",
                    "status": "completed",
                    "created_at": "2026-03-30T11:00:00Z",
                    "output_url": "https://storage.chamelaion.com/output/6f82a2d8.mp4",
                },
                {
                    "id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
                    "reference_id": "batch-2026-04",
                    "status": "queued",
                    "created_at": "2026-03-30T11:02:00Z",
                },
            ],
            "pagination": {"limit": 20, "offset": 0, "total": 2},
        }
        page = RequestPage.from_api(payload)
        assert [r.id for r in page.data] == [
            "6f82a2d8-a6d4-4e8a-a0fa-e8b09823a2d8",
            "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        ]
        assert all(isinstance(r, LipsyncRequest) for r in page.data)
        assert (page.limit, page.offset, page.total) == (20, 0, 2)

    def test_pagination_values_are_ints(self) -> None:
        page = RequestPage.from_api({"data": [], "pagination": {"limit": 50, "offset": 100, "total": 120}})
        assert (page.limit, page.offset, page.total) == (50, 100, 120)
        page = RequestPage.from_api({"data": [], "pagination": {"limit": 5.0, "offset": "10", "total": "7"}})
        assert (page.limit, page.offset, page.total) == (5, 10, 7)

    def test_missing_pagination_defaults_to_the_data(self) -> None:
        page = RequestPage.from_api({"data": [{"id": "a", "status": "queued"}, {"id": "b", "status": "x"}]})
        assert page.total == 2
        assert page.limit == 2
        assert page.offset == 0

    def test_unknown_top_level_fields_ignored(self) -> None:
        page = RequestPage.from_api(
            {"data": [], "pagination": {"limit": 1, "offset": 0, "total": 0}, "links": {"next": None}}
        )
        assert page.data == []

    @pytest.mark.parametrize("payload", [None, [], {}, {"data": None}, {"data": {"id": "a"}}])
    def test_rejects_payload_without_data_list(self, payload: Any) -> None:
        with pytest.raises(ValueError, match="'data' list"):
            RequestPage.from_api(payload)

    def test_rejects_item_without_id(self) -> None:
        with pytest.raises(ValueError, match="missing id"):
            RequestPage.from_api({"data": [{"status": "queued"}], "pagination": {"total": 1}})


# -- ordering by time ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-25T11:00:00Z", datetime(2026, 11, 25, 11, 0, tzinfo=timezone.utc)),
        ("2026-11-25T11:00:00.250Z", datetime(2026, 11, 25, 11, 0, 0, 250000, tzinfo=timezone.utc)),
        ("2026-11-25T12:30:00+02:00", datetime(2026, 11, 25, 10, 30, tzinfo=timezone.utc)),
        ("2026-11-25T11:00:00.1234567Z", datetime(2026, 11, 25, 11, 0, 0, 123456, tzinfo=timezone.utc)),
        ("2026-11-25T11:00:00", datetime(2026, 11, 25, 11, 0, tzinfo=timezone.utc)),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
    ids=["z", "millis", "offset", "seven-digits", "naive-is-utc", "garbage", "empty", "missing"],
)
def test_parse_api_time(value: str | None, expected: datetime | None) -> None:
    assert parse_api_time(value) == expected


def test_newest_first_compares_times_not_text() -> None:
    requests = [
        LipsyncRequest(id="a", status="queued", created_at="2026-11-25T11:00:00Z"),
        LipsyncRequest(id="b", status="queued", created_at="2026-11-25T11:00:00.250Z"),
        LipsyncRequest(id="c", status="queued", created_at="2026-11-25T12:30:00+02:00"),  # 10:30 UTC
        LipsyncRequest(id="d", status="queued", created_at=None),
        LipsyncRequest(id="e", status="queued", created_at="not a time"),
        LipsyncRequest(id="f", status="queued", created_at="2026-11-25T11:00:00+00:00"),  # same as a
    ]
    # Newest first; a and f tie and keep their order; unreadable times last, in their order.
    assert [r.id for r in newest_first(requests)] == ["b", "a", "f", "c", "d", "e"]
