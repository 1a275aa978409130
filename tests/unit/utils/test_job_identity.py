"""Derived reference ids, input identity and the task state store record (no HTTP)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import structlog

from airflow_provider_chamelaion.utils.job_identity import (
    STATE_KEY,
    Submission,
    SubmissionStore,
    derived_reference_id,
    url_identity,
)
from tests.harness.context import FakeTaskStateStore

RUN = "scheduled__2026-11-25T00:00:00+00:00"
INPUTS = {"video": "https://cdn.test:443/ep42.mp4", "audio": "https://cdn.test:443/ja.wav"}


def derive(dag_id: str = "dub", task_id: str = "submit", **kwargs: Any) -> str:
    kwargs.setdefault("run_id", RUN)
    kwargs.setdefault("map_index", -1)
    kwargs.setdefault("inputs", INPUTS)
    return derived_reference_id(dag_id=dag_id, task_id=task_id, **kwargs)


def test_the_documented_format_and_digest() -> None:
    """airflow-<dag>.<task>-<16 hex of SHA-256 over canonical JSON of the identity>."""
    identity = {
        "namespace": "staging",
        "dag_id": "dub",
        "task_id": "submit",
        "run_id": RUN,
        "map_index": 2,
        "inputs": INPUTS,
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = "airflow-dub.submit-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert derive(map_index=2, namespace="staging") == expected


def test_ids_that_collided_under_the_old_scheme_differ() -> None:
    # Both were "airflow-dub-ja-submit-scheduled__2026-11-25T00:00:00+00:00".
    assert derive("dub-ja", "submit") != derive("dub", "ja-submit")


@pytest.mark.parametrize(
    "change",
    [
        {"namespace": "production"},
        {"run_id": "scheduled__2026-11-26T00:00:00+00:00"},
        {"map_index": 0},
        {"inputs": {**INPUTS, "audio": "https://cdn.test:443/ja-fixed.wav"}},
        {"inputs": {**INPUTS, "disable_active_speaker_detection": True}},
    ],
    ids=["namespace", "run", "map-index", "audio", "option"],
)
def test_every_part_of_the_identity_changes_the_id(change: dict[str, Any]) -> None:
    assert derive(**change) != derive()


def test_map_index_none_is_the_unmapped_task() -> None:
    assert derive(map_index=None) == derive(map_index=-1)


@pytest.mark.parametrize(
    ("dag_id", "task_id"),
    [("d" * 250, "t" * 250), ("d" * 250, "t"), ("d", "t" * 250), ("dub ja/ünïcode", "task:1")],
    ids=["both-long", "long-dag", "long-task", "odd-characters"],
)
def test_bounded_and_url_safe(dag_id: str, task_id: str) -> None:
    reference_id = derive(dag_id, task_id)
    assert len(reference_id) <= 100
    assert reference_id.startswith("airflow-")
    assert all(char.isascii() and (char.isalnum() or char in "._-") for char in reference_id)


def test_long_ids_differing_only_past_the_readable_part_still_differ() -> None:
    assert derive("d" * 250 + "1", "t") != derive("d" * 250 + "2", "t")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            "https://bucket.s3.amazonaws.com/ep42.mp4?X-Amz-Signature=aaa&X-Amz-Expires=600",
            "https://bucket.s3.amazonaws.com/ep42.mp4?X-Amz-Signature=bbb&X-Amz-Expires=900",
        ),
        ("https://CDN.Example.com/ep42.mp4#t=10", "https://cdn.example.com:443/ep42.mp4"),
        ("http://cdn.example.com/ep42.mp4", "http://cdn.example.com:80/ep42.mp4"),
    ],
    ids=["re-signed", "host-case-and-fragment", "default-port"],
)
def test_same_url_identity(first: str, second: str) -> None:
    assert url_identity(first) == url_identity(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("https://cdn.example.com/ep42.mp4", "https://cdn.example.com/EP42.mp4"),
        ("https://cdn.example.com/ep42.mp4", "http://cdn.example.com/ep42.mp4"),
        ("https://cdn.example.com/ep42.mp4", "https://cdn.example.com:8443/ep42.mp4"),
        ("https://cdn.example.com/ep42.mp4", "https://other.example.com/ep42.mp4"),
    ],
    ids=["path-case", "scheme", "port", "host"],
)
def test_different_url_identity(first: str, second: str) -> None:
    assert url_identity(first) != url_identity(second)


# -- the record an earlier try left -------------------------------------------------------------------------


def store_with(value: Any) -> FakeTaskStateStore:
    store = FakeTaskStateStore()
    store.data[STATE_KEY] = value
    return store


def load(store: FakeTaskStateStore, reference_id: str | None, inputs: str) -> tuple[Any, list[str]]:
    with structlog.testing.capture_logs() as logs:
        record = SubmissionStore({"task_state_store": store}, structlog.get_logger()).load(
            reference_id, inputs
        )
    return record, [entry["event"] for entry in logs]


def test_a_matching_record_is_used() -> None:
    saved = Submission("ep42-ja", "digest-1", "req-1", ("old-1",))
    record, logs = load(store_with(saved.to_state()), "ep42-ja", "digest-1")
    assert record == saved
    assert logs == []


@pytest.mark.parametrize(
    ("reference_id", "inputs", "reason"),
    [
        ("ep42-ja-v2", "digest-1", "reference_id"),
        ("ep42-ja", "digest-2", "inputs"),
    ],
    ids=["reference-id-changed", "inputs-changed"],
)
def test_a_stale_record_is_ignored_and_the_log_says_why(reference_id: str, inputs: str, reason: str) -> None:
    saved = Submission("ep42-ja", "digest-1", "req-1")
    record, logs = load(store_with(saved.to_state()), reference_id, inputs)
    assert record is None
    [line] = logs
    assert "req-1" in line
    assert reason in line


def test_a_record_of_the_previous_format_is_ignored() -> None:
    old = {"request_id": "req-1", "reference_id": "ep42-ja", "submitted_at": "2026-11-25T00:00:00+00:00"}
    record, logs = load(store_with(old), "ep42-ja", "digest-1")
    assert record is None
    assert "older version" in logs[0]


def test_no_store_means_no_record() -> None:
    store = SubmissionStore({}, structlog.get_logger())
    assert store.load("ep42-ja", "digest-1") is None
    store.save(Submission("ep42-ja", "digest-1", "req-1"))  # nowhere to write: not an error
