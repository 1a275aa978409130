"""The "Lip-sync output" extra link: the output URL while it is valid, nothing once it has expired.

The link as Airflow stores it after a real run is checked in tests/integration/test_example_dags.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_chamelaion.operators.lipsync import LipsyncGenerateOperator
from airflow_provider_chamelaion.sensors.lipsync import LipsyncRequestSensor
from airflow_provider_chamelaion.utils import links
from airflow_provider_chamelaion.utils.links import LipsyncOutputLink, output_link, signed_url_expiry
from airflow_provider_chamelaion.version_compat import BaseOperatorLink
from tests.harness.triggers import class_at

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SIMULATOR_URL = "http://127.0.0.1:8089/outputs/r-1.mp4?expires={}&sig=5f2b9c"
S3_URL = (
    "https://dubs.s3.amazonaws.com/r-1.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20251231T230000Z"
    "&X-Amz-Expires=7200&X-Amz-Signature=ab12"
)


@pytest.mark.parametrize(
    ("url", "expiry"),
    [
        (SIMULATOR_URL.format(1767229200), 1767229200.0),
        (S3_URL, NOW + 3600),  # signed an hour before NOW, valid two hours
        ("https://storage.chamelaion.com/output/6f82a2d8.mp4", None),  # the reference's example: unsigned
        ("https://x.test/o.mp4?expires=soon", None),
    ],
)
def test_expiry_is_read_from_the_signed_url(url: str, expiry: float | None) -> None:
    assert signed_url_expiry(url) == expiry


@pytest.mark.parametrize(
    ("request_dict", "link"),
    [
        ({"output_url": SIMULATOR_URL.format(int(NOW) + 60)}, SIMULATOR_URL.format(int(NOW) + 60)),
        ({"output_url": SIMULATOR_URL.format(int(NOW) - 1)}, ""),
        ({"output_url": S3_URL}, S3_URL),
        (
            {"output_url": "https://storage.chamelaion.com/output/6f82a2d8.mp4"},
            "https://storage.chamelaion.com/output/6f82a2d8.mp4",
        ),
        ({"status": "queued", "output_url": None}, ""),
        (None, ""),  # the task pushed no request (generate without wait_for_completion)
    ],
)
def test_link_is_the_output_while_valid(request_dict: object, link: str) -> None:
    assert output_link(request_dict, now=NOW) == link


VIDEO, AUDIO = "https://media.test/v.mp4", "https://media.test/a.wav"
VALID = SIMULATOR_URL.format(4_102_444_800)  # expires in 2100


def test_operator_and_sensor_carry_the_link_and_say_where_the_request_is() -> None:
    # The classes offer it (a mapped task's links are read from its class); see the next test.
    assert [type(link) for link in LipsyncGenerateOperator.operator_extra_links] == [LipsyncOutputLink]
    assert [type(link) for link in LipsyncRequestSensor.operator_extra_links] == [LipsyncOutputLink]
    assert LipsyncGenerateOperator.request_xcom_key == "request"
    assert LipsyncRequestSensor.request_xcom_key == "return_value"


@pytest.mark.parametrize(("wait", "offered"), [(True, [LipsyncOutputLink]), (False, [])])
def test_a_generate_task_offers_the_link_only_when_it_waits(wait: bool, offered: list[type]) -> None:
    """A task that does not wait has no output to link to: no empty "Extra Links" section in the UI."""
    operator = LipsyncGenerateOperator(
        task_id="submit", wait_for_completion=wait, video_url=VIDEO, audio_url=AUDIO
    )
    assert [type(link) for link in operator.operator_extra_links] == offered
    sensor = LipsyncRequestSensor(task_id="wait", request_id="r-1")
    assert [type(link) for link in sensor.operator_extra_links] == [LipsyncOutputLink]


@pytest.fixture
def xcom_reads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every XCom read of the link (Airflow 3's task SDK logs a missing one at ERROR level)."""
    reads: list[dict[str, Any]] = []

    class RecordingXCom:
        @staticmethod
        def get_value(**kwargs: Any) -> Any:
            reads.append(kwargs)
            return {"output_url": VALID} if kwargs["key"] in ("request", "return_value") else None

    monkeypatch.setattr(links, "_xcom", lambda: RecordingXCom)
    return reads


@pytest.mark.parametrize(
    "operator",
    [
        LipsyncRequestSensor(task_id="wait", request_id="r-1", deferrable=True),
        LipsyncGenerateOperator(task_id="dub", wait_for_completion=True, video_url=VIDEO, audio_url=AUDIO),
        LipsyncGenerateOperator(
            task_id="submit", video_url=VIDEO, audio_url=AUDIO
        ),  # a mapped task still offers the link
    ],
    ids=["sensor", "generate-waiting", "generate-not-waiting"],
)
def test_a_live_task_without_its_output_yet_gives_no_link_quietly(
    operator: Any, xcom_reads: list[dict[str, Any]]
) -> None:
    """Airflow 3 computes links on the worker when a try ends, also when it defers: no XCom is read."""
    no_key: Any = SimpleNamespace()
    assert LipsyncOutputLink().get_link(operator, ti_key=no_key) == ""
    assert xcom_reads == []


def test_a_live_task_with_its_output_links_to_it(xcom_reads: list[dict[str, Any]]) -> None:
    sensor = LipsyncRequestSensor(task_id="wait", request_id="r-1")
    sensor.output_request = {"id": "r-1", "status": "completed", "output_url": VALID}
    no_key: Any = SimpleNamespace()
    assert LipsyncOutputLink().get_link(sensor, ti_key=no_key) == VALID
    assert xcom_reads == []


@pytest.mark.parametrize(("task_type", "key"), [("LipsyncRequestSensor", "return_value"), ("X", "request")])
def test_a_serialized_task_reads_the_request_from_xcom(
    xcom_reads: list[dict[str, Any]], task_type: str, key: str
) -> None:
    """Airflow 2's webserver passes the serialized operator: the link reads what the task pushed."""
    served = SimpleNamespace(task_type=task_type)
    ti_key = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1)
    assert LipsyncOutputLink().get_link(served, ti_key=ti_key) == VALID  # type: ignore[arg-type]
    assert xcom_reads == [{"ti_key": ti_key, "key": key}]


def test_the_link_is_registered_in_the_provider_info() -> None:
    from airflow_provider_chamelaion.get_provider_info import get_provider_info

    [path] = get_provider_info()["extra-links"]
    assert class_at(path) is LipsyncOutputLink
    assert issubclass(LipsyncOutputLink, BaseOperatorLink)
