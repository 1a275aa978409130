"""The "Lip-sync output" extra link: the output URL while it is valid, nothing once it has expired.

The link as Airflow stores it after a real run is checked in tests/integration/test_example_dags.py.
"""

from __future__ import annotations

import pytest

from airflow_provider_chamelaion.links import LipsyncOutputLink, output_link, signed_url_expiry
from airflow_provider_chamelaion.operators.lipsync import LipsyncGenerateOperator
from airflow_provider_chamelaion.sensors.lipsync import LipsyncRequestSensor

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


def test_operator_and_sensor_carry_the_link_and_say_where_the_request_is() -> None:
    assert [type(link) for link in LipsyncGenerateOperator.operator_extra_links] == [LipsyncOutputLink]
    assert [type(link) for link in LipsyncRequestSensor.operator_extra_links] == [LipsyncOutputLink]
    assert LipsyncGenerateOperator.request_xcom_key == "request"
    assert LipsyncRequestSensor.request_xcom_key == "return_value"


def test_the_link_is_registered_in_the_provider_info() -> None:
    from airflow.sdk import BaseOperatorLink
    from airflow.sdk.module_loading import import_string

    from airflow_provider_chamelaion.get_provider_info import get_provider_info

    [path] = get_provider_info()["extra-links"]
    assert import_string(path) is LipsyncOutputLink
    assert issubclass(LipsyncOutputLink, BaseOperatorLink)
