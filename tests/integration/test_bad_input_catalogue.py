"""The docs' bad-input catalogue, row by row: the error, its message, and how many HTTP calls it cost.

Each row id (B1, B2, ...) is a row of the table in docs/bad-inputs.md; a test below keeps the two in step.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_chamelaion.client.retry import RetryPolicy
from airflow_provider_chamelaion.exceptions import (
    ChamelaionAuthError,
    ChamelaionConfigError,
    ChamelaionError,
    ChamelaionNotFoundError,
    ChamelaionTLSError,
    ChamelaionValidationError,
)
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.operators.batch import (
    LipsyncBatchDownloadOperator,
    LipsyncBatchGenerateOperator,
)
from airflow_provider_chamelaion.operators.lipsync import LipsyncDownloadOperator, LipsyncGenerateOperator
from airflow_provider_chamelaion.sensors.lipsync import LipsyncRequestSensor
from airflow_provider_chamelaion.simulator import Simulator
from tests.harness.constants import ROOT
from tests.harness.context import make_context

if TYPE_CHECKING:
    from airflow_provider_chamelaion.version_compat import Context

URLS = {"video_url": "https://cdn.example.com/v.mp4", "audio_url": "https://cdn.example.com/a.wav"}


def context() -> Context:
    return make_context(dag_id="catalogue", task_id="task", run_id="manual__1")


@dataclass(frozen=True)
class Row:
    id: str
    action: Callable[[Path], Any]
    error: type[Exception]
    message: str  # a regular expression the error's text must match
    http_calls: int  # calls the rejection cost: 0 = rejected locally


def generate_op(**kwargs: Any) -> LipsyncGenerateOperator:
    return LipsyncGenerateOperator(task_id="generate", **kwargs)


def execute_generate(**kwargs: Any) -> Callable[[Path], Any]:
    return lambda tmp: generate_op(**kwargs).execute(context())


def file_pair(tmp: Path, video: bytes = b"v" * 10, audio: bytes = b"a" * 10) -> dict[str, str]:
    (tmp / "v.mp4").write_bytes(video)
    (tmp / "a.wav").write_bytes(audio)
    return {"video_file": str(tmp / "v.mp4"), "audio_file": str(tmp / "a.wav")}


def pipe_reader(data: bytes) -> io.BufferedReader:
    """A readable file object that cannot seek (like a socket or a pipe)."""
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    return os.fdopen(read_end, "rb")


def hook() -> ChamelaionHook:
    return ChamelaionHook(retry_policy=RetryPolicy(max_attempts=1))


def with_connection(env: dict[str, str], action: Callable[[Path], Any]) -> Callable[[Path], Any]:
    """Run ``action`` with ``chamelaion_default`` replaced (the simulator keeps counting calls)."""

    def run(tmp: Path) -> Any:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            return action(tmp)

    return run


def conn(**fields: Any) -> dict[str, str]:
    return {"AIRFLOW_CONN_CHAMELAION_DEFAULT": json.dumps({"conn_type": "chamelaion", **fields})}


ROWS = [
    # LipsyncGenerateOperator, when the DAG file is parsed
    Row("B1", lambda t: generate_op(**URLS, **file_pair(t)), ChamelaionConfigError, "not both", 0),
    Row(
        "B2",
        lambda t: generate_op(video_url=URLS["video_url"]),
        ChamelaionConfigError,
        "missing audio_url",
        0,
    ),
    Row("B3", lambda t: generate_op(), ChamelaionConfigError, "give video_url and audio_url", 0),
    Row(
        "B4",
        lambda t: generate_op(**file_pair(t), reference_id="x"),
        ChamelaionConfigError,
        "reference_id cannot be used with video_file",
        0,
    ),
    Row(
        "B5",
        lambda t: generate_op(**file_pair(t), disable_active_speaker_detection=True),
        ChamelaionConfigError,
        "disable_active_speaker_detection cannot be used",
        0,
    ),
    Row(
        "B6",
        lambda t: generate_op(**URLS, reuse_existing_request=True),
        ChamelaionConfigError,
        "reuse_existing_request=True needs a reference_id",
        0,
    ),
    Row(
        "B7",
        lambda t: generate_op(**URLS, disable_active_speaker_detection="yes"),
        ChamelaionConfigError,
        "must be true or false \\(a boolean\\) or absent",
        0,
    ),
    Row("B8", lambda t: generate_op(**URLS, poll_interval=0), ChamelaionConfigError, "must be positive", 0),
    # LipsyncGenerateOperator, at execute, before any HTTP call (templates are rendered by then)
    Row(
        "B9",
        execute_generate(video_url="ftp://cdn/v.mp4", audio_url=URLS["audio_url"]),
        ChamelaionConfigError,
        "video_url must be an absolute http:// or https:// URL",
        0,
    ),
    Row(
        "B10",
        execute_generate(video_url=URLS["video_url"], audio_url="s3://bucket/a.wav"),
        ChamelaionConfigError,
        "audio_url must be an absolute http:// or https:// URL",
        0,
    ),
    Row(
        "B11",
        execute_generate(**URLS, reference_id="ep42/ja"),
        ChamelaionConfigError,
        "contains '/'",
        0,
    ),
    Row(
        "B12",
        lambda t: generate_op(video_file=str(t / "missing.mp4"), audio_file=str(t / "a.wav")).execute(
            context()
        ),
        ChamelaionConfigError,
        r"video_file '.*missing\.mp4' does not exist",
        0,
    ),
    Row(
        "B13",
        lambda t: generate_op(**file_pair(t, audio=b"")).execute(context()),
        ChamelaionConfigError,
        r"audio_file '.*a\.wav' is empty",
        0,
    ),
    # LipsyncRequestSensor
    Row(
        "B14",
        lambda t: LipsyncRequestSensor(task_id="wait", request_id="a/b").execute(context()),
        ChamelaionConfigError,
        "request_id 'a/b' contains '/'",
        0,
    ),
    Row(
        "B15",
        lambda t: LipsyncRequestSensor(task_id="wait", request_id="no-such-id").poke(context()),
        ChamelaionNotFoundError,
        "HTTP 404.*no-such-id",
        1,
    ),
    # LipsyncDownloadOperator
    Row(
        "B16",
        lambda t: LipsyncDownloadOperator(task_id="dl", request_id="x", destination="").execute(context()),
        ChamelaionConfigError,
        "destination is required",
        0,
    ),
    Row(
        "B17",
        lambda t: LipsyncDownloadOperator(task_id="dl", request_id="", destination=str(t)).execute(context()),
        ChamelaionConfigError,
        "request_id must be a non-empty string",
        0,
    ),
    # ChamelaionHook
    Row(
        "B18",
        lambda t: hook().list_requests(limit=0),
        ChamelaionConfigError,
        "limit must be a whole number",
        0,
    ),
    Row(
        "B19",
        lambda t: hook().list_requests(offset=-1),
        ChamelaionConfigError,
        "offset must be a whole number",
        0,
    ),
    Row(
        "B20",
        lambda t: hook().generate_with_media(pipe_reader(b"streamed"), file_pair(t)["audio_file"]),
        ChamelaionConfigError,
        "video is a file object that cannot seek",
        0,
    ),
    Row(
        "B21",
        lambda t: hook().generate("https://cdn/v.mp4", "/local/a.wav"),
        ChamelaionConfigError,
        "audio_url must be an absolute http",
        0,
    ),
    # The connection
    Row(
        "B22",
        with_connection(conn(host="http://127.0.0.1:1/api"), lambda t: hook().get_request("x")),
        ChamelaionConfigError,
        "'chamelaion_default' has no API key",
        0,
    ),
    Row(
        "B23",
        with_connection(conn(host="ftp://api.example.com", password="k"), lambda t: hook().get_request("x")),
        ChamelaionConfigError,
        "'chamelaion_default' has a malformed Base URL",
        0,
    ),
    Row(
        "B24",
        lambda t: ChamelaionHook("chamelaion_missing").get_request("x"),
        ChamelaionConfigError,
        "'chamelaion_missing' is not defined.*AIRFLOW_CONN_CHAMELAION_MISSING",
        0,
    ),
    # Rejected by the API
    Row(
        "B25",
        lambda t: with_wrong_key(t),
        ChamelaionAuthError,
        "HTTP 401.*Invalid or missing API key.*The API did not accept the API key of Airflow connection "
        "'chamelaion_default': put the right key in the connection's password",
        1,
    ),
    Row(
        "B26",
        lambda t: hook().generate("https://cdn/v.mp4", "https://cdn/a.wav", reference_id=""),
        ChamelaionConfigError,
        "reference_id must be a non-empty string",
        0,
    ),
    Row(
        "B27",
        lambda t: LipsyncDownloadOperator(
            task_id="dl", request_id="x", destination="s3://dubs/{{ ds }}/42.mp4"
        ),
        ChamelaionConfigError,
        r"destination 's3://dubs/\{\{ ds \}\}/42.mp4' is on 's3://' object storage.*"
        r"pip install apache-airflow-providers-amazon s3fs",
        0,
    ),
    Row(
        "B28",
        lambda t: LipsyncGenerateOperator(task_id="up", video_file="gs://media/42.mp4", audio_file=str(t)),
        ChamelaionConfigError,
        r"video_file 'gs://media/42.mp4' is on 'gs://' object storage.*apache-airflow-providers-google",
        0,
    ),
    Row(
        "B29",
        execute_generate(**URLS, reference_id=".."),
        ChamelaionConfigError,
        r"reference_id '\.\.' cannot be used",
        0,
    ),
    Row(
        "B30",
        lambda t: LipsyncRequestSensor(task_id="wait", request_id=".", deferrable=True).execute(context()),
        ChamelaionConfigError,
        r"request_id '\.' cannot be used",
        0,
    ),
    Row(
        "B31",
        lambda t: generate_op(**URLS, disable_active_speaker_detection=1),
        ChamelaionConfigError,
        r"disable_active_speaker_detection must be true or false \(a boolean\) or absent, got 1",
        0,
    ),
    Row(
        "B32",
        execute_generate(video_url="https://cdn.example.com:99999/v.mp4", audio_url=URLS["audio_url"]),
        ChamelaionConfigError,
        r"video_url 'https://cdn.example.com:99999/v.mp4' has port 99999",
        0,
    ),
    # LipsyncBatchGenerateOperator: the catalogue is checked whole before any HTTP call
    Row(
        "B33",
        lambda t: batch_op(
            t,
            [
                URLS | {"reference_id": "t-1"},
                URLS | {"reference_id": "t-2", "disable_active_speaker_detection": 1},
            ],
        ).execute(context()),
        ChamelaionConfigError,
        r"(?s)nothing was submitted.*row 2: disable_active_speaker_detection must be true or false",
        0,
    ),
    Row(
        "B34",
        lambda t: batch_op(
            t, [URLS | {"reference_id": "t-1", "audio_url": "https://cdn.example.com:70000/a.wav"}]
        ).execute(context()),
        ChamelaionConfigError,
        r"(?s)nothing was submitted.*row 1: audio_url .* has port 70000",
        0,
    ),
    Row(
        "B35",
        lambda t: batch_catalogue_file(
            t,
            "catalogue.csv",
            "reference_id,video_url,audio_url,disable_active_speaker_detection\n"
            f"t-1,{URLS['video_url']},{URLS['audio_url']},1\n",
        ),
        ChamelaionConfigError,
        r"row 2: disable_active_speaker_detection must be true or false .*'1'",
        0,
    ),
    # LipsyncBatchDownloadOperator, when the DAG file is parsed
    Row(
        "B36",
        lambda t: LipsyncBatchDownloadOperator(
            task_id="dl", manifest_path="/m.jsonl", destination="gs://dubs/{{ ds }}/"
        ),
        ChamelaionConfigError,
        r"destination 'gs://dubs/\{\{ ds \}\}/' is on 'gs://' object storage.*apache-airflow-providers-google",
        0,
    ),
    Row(
        "B37",
        lambda t: LipsyncBatchDownloadOperator(
            task_id="dl", manifest_path="/m.jsonl", destination="dubs/{{ ds }}/"
        ),
        ChamelaionConfigError,
        r"destination 'dubs/\{\{ ds \}\}/' is a relative path.*give an absolute path or a URI such as s3://",
        0,
    ),
    Row(
        "B38",
        lambda t: generate_op(**URLS, still_waiting_interval=0),
        ChamelaionConfigError,
        r"generate: still_waiting_interval must be positive \(seconds\), got 0",
        0,
    ),
    Row(
        "B39",
        lambda t: LipsyncRequestSensor(task_id="wait", request_id="r", still_waiting_interval=-5),
        ChamelaionConfigError,
        r"wait: still_waiting_interval must be positive .*got -5",
        0,
    ),
    Row(
        "B40",
        lambda t: with_connection(
            {"AIRFLOW_CONN_CHAMELAION_DEFAULT": https_uri_to(ACTIVE["simulator"])},
            lambda t: hook().get_request("x"),
        )(t),
        ChamelaionTLSError,
        r"WRONG_VERSION_NUMBER.*set the connection's extra scheme=http",
        0,  # the TLS handshake fails: no HTTP request reaches the server, and none is retried
    ),
    # LipsyncBatchGenerateOperator's manifest_path, when the DAG file is parsed
    Row(
        "B41",
        lambda t: batch_op_at(t, "gs://bucket/{{ run_id }}/manifest.jsonl"),
        ChamelaionConfigError,
        r"manifest_path 'gs://bucket/\{\{ run_id \}\}/manifest.jsonl' is on 'gs://' object storage",
        0,
    ),
    Row(
        "B42",
        lambda t: batch_op_at(t, "backfills/{{ run_id }}/manifest.jsonl"),
        ChamelaionConfigError,
        r"manifest_path 'backfills/\{\{ run_id \}\}/manifest.jsonl' is a relative path",
        0,
    ),
]


def batch_op_at(tmp: Path, manifest_path: str) -> LipsyncBatchGenerateOperator:
    return LipsyncBatchGenerateOperator(task_id="batch", catalogue=[], manifest_path=manifest_path)


def batch_op(tmp: Path, catalogue: Any) -> LipsyncBatchGenerateOperator:
    return LipsyncBatchGenerateOperator(
        task_id="batch", catalogue=catalogue, manifest_path=str(tmp / "manifest.jsonl")
    )


def batch_catalogue_file(tmp: Path, name: str, text: str) -> Any:
    (tmp / name).write_text(text)
    return batch_op(tmp, str(tmp / name)).execute(context())


def https_uri_to(simulator: Simulator) -> str:
    """A URI-form connection to the plain-HTTP simulator without ``scheme=http``: https is assumed."""
    host_port = simulator.origin.removeprefix("http://")
    return f"chamelaion://:sk-chmln-local-3f9a2c7e51@{host_port}/api"


def with_wrong_key(tmp: Path) -> Any:
    simulator_url = json.loads(ACTIVE["simulator"].connection_json())["host"]
    return with_connection(conn(host=simulator_url, password="wrong-key"), lambda t: hook().get_request("x"))(
        tmp
    )


ACTIVE: dict[str, Simulator] = {}


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.id)
@pytest.mark.usefixtures("plain_install")  # B27: the user's install has no S3 filesystem
def test_bad_input_is_rejected_with_a_clear_error(row: Row, simulator: Simulator, tmp_path: Path) -> None:
    ACTIVE["simulator"] = simulator
    with pytest.raises(row.error, match=row.message):
        row.action(tmp_path)
    assert len(simulator.state.calls) == row.http_calls


def test_api_validation_errors_carry_the_api_message(simulator: Simulator) -> None:
    """422 from the API (here: the simulator refusing an unknown field) is a typed error with its message."""
    hook_ = hook()
    with pytest.raises(ChamelaionValidationError, match="unknown field"):
        hook_._call("POST", "/v1/lipsync/generate", idempotent=False, json={"inputs": [], "priority": 1})
    assert len(simulator.state.calls) == 1


def test_documented_catalogue_matches_the_tests() -> None:
    page = (ROOT / "docs" / "bad-inputs.md").read_text()
    documented = set(re.findall(r"^\| (B\d+) \|", page, flags=re.MULTILINE))
    assert documented == {row.id for row in ROWS}


def test_every_error_is_a_chamelaion_error() -> None:
    assert all(issubclass(row.error, ChamelaionError) for row in ROWS)
