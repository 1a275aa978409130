"""Object storage this installation cannot use is refused before anything is paid for.

Every test here runs as a plain install (the ``plain_install`` fixture): no Amazon, Google or Azure
provider, no s3fs. That is the situation the README's first Quickstart met (the job was paid for, then
the download failed). The compatibility legs are plain installs and run this module unpatched.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest
from requests_mock import Mocker

from airflow_provider_chamelaion.client import media
from airflow_provider_chamelaion.client.media import (
    atomic_write,
    check_filesystem,
    check_storage_location,
    uri_scheme,
)
from airflow_provider_chamelaion.exceptions import ChamelaionConfigError
from airflow_provider_chamelaion.operators.lipsync import LipsyncDownloadOperator, LipsyncGenerateOperator
from airflow_provider_chamelaion.version_compat import ObjectStoragePath
from tests.harness.context import make_context

TEMPLATED_S3 = "s3://dubs/{{ ds }}/ep42-ja.mp4"

pytestmark = pytest.mark.usefixtures("plain_install")


@pytest.mark.parametrize(
    ("value", "scheme"),
    [
        (TEMPLATED_S3, "s3"),
        ("GS://bucket/{{ ds }}.mp4", "gs"),
        ("file:///tmp/x.mp4", "file"),
        ("/tmp/{{ ds }}/x.mp4", None),
        ("{{ var.value.destination }}", None),  # the scheme itself is templated: known only at run time
        ("{{ var.value.scheme }}://bucket/x.mp4", None),
        (Path("/tmp/x.mp4"), None),
    ],
)
def test_scheme_is_read_from_unrendered_templates(value: object, scheme: str | None) -> None:
    assert uri_scheme(value) == scheme


def test_templated_s3_destination_fails_the_dag_at_parse_naming_the_package() -> None:
    with pytest.raises(ChamelaionConfigError) as info:
        LipsyncDownloadOperator(task_id="download", request_id="r", destination=TEMPLATED_S3)
    message = str(info.value)
    assert "download: destination 's3://dubs/{{ ds }}/ep42-ja.mp4'" in message
    assert "pip install apache-airflow-providers-amazon s3fs" in message


def test_object_storage_path_destination_is_checked_too() -> None:
    with pytest.raises(ChamelaionConfigError, match=r"apache-airflow-providers-google"):
        LipsyncDownloadOperator(
            task_id="download", request_id="r", destination=ObjectStoragePath("gs://dubs/ep42.mp4")
        )


def test_upload_source_on_unusable_storage_fails_at_parse() -> None:
    with pytest.raises(ChamelaionConfigError, match=r"upload: video_file 's3://media/\{\{ ds \}\}/42.mp4'"):
        LipsyncGenerateOperator(
            task_id="upload", video_file="s3://media/{{ ds }}/42.mp4", audio_file="/tmp/42-ja.wav"
        )


def test_unknown_scheme_names_what_is_missing() -> None:
    with pytest.raises(ChamelaionConfigError, match="registers the 'memory' filesystem"):
        check_filesystem("memory://bucket/x.mp4", "destination")


@pytest.mark.parametrize(
    "destination", ["/tmp/dubs/{{ ds }}/ep42.mp4", "file:///tmp/dubs/ep42.mp4", "{{ var.value.dest }}"]
)
def test_local_and_fully_templated_destinations_pass_at_parse(destination: str) -> None:
    LipsyncDownloadOperator(task_id="download", request_id="r", destination=destination)


def test_registered_store_without_its_fsspec_package_names_fsspec_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The Amazon provider installed without its s3fs extra: Airflow knows the scheme, fsspec cannot load it.
    monkeypatch.setattr(media, "_airflow_has_filesystem", lambda scheme: True)
    with pytest.raises(ChamelaionConfigError) as info:
        check_filesystem(TEMPLATED_S3, "destination")
    assert "whose filesystem is not installed: Install s3fs to access S3" in str(info.value)
    assert "pip install apache-airflow-providers-amazon s3fs" in str(info.value)


def test_destination_rendered_at_run_time_is_checked_before_any_http_call(
    mock_conn: str, requests_mock: Mocker
) -> None:
    operator = LipsyncDownloadOperator(
        task_id="download", request_id="ep42-ja", destination="{{ var.value.dest }}"
    )
    operator.destination = "s3://dubs/2026-11-02/ep42-ja.mp4"  # what the template rendered to
    with pytest.raises(ChamelaionConfigError, match=r"pip install apache-airflow-providers-amazon s3fs"):
        operator.execute(make_context(task_id="download"))
    assert requests_mock.call_count == 0


def test_quickstart_object_storage_variant_is_an_import_error_so_nothing_runs(tmp_path: Path) -> None:
    from tests.harness.airflow_names import DagBag

    (tmp_path / "dub_episode.py").write_text(
        textwrap.dedent(
            """
            import pendulum
            from airflow import DAG

            from airflow_provider_chamelaion.operators.lipsync import (
                LipsyncDownloadOperator,
                LipsyncGenerateOperator,
            )

            with DAG(dag_id="dub_episode", schedule="@daily", start_date=pendulum.datetime(2026, 11, 1)):
                submit = LipsyncGenerateOperator(
                    task_id="submit",
                    video_url="https://cdn.example.com/episodes/42.mp4",
                    audio_url="https://cdn.example.com/dubs/42-ja.wav",
                )
                submit >> LipsyncDownloadOperator(
                    task_id="download", request_id=submit.output, destination="s3://dubs/{{ ds }}/42.mp4"
                )
            """
        )
    )
    bag = DagBag(dag_folder=str(tmp_path))
    assert "dub_episode" not in bag.dag_ids  # no DAG, so no run, so no job paid for
    (error,) = bag.import_errors.values()
    assert "pip install apache-airflow-providers-amazon s3fs (or use a local path)" in error
    # As `airflow dags list-import-errors` shows it: Airflow's rich table, where `[s3fs]` would be markup.
    shown = import_errors_table({"filepath": str(tmp_path / "dub_episode.py"), "error": error})
    assert "pip install apache-airflow-providers-amazon s3fs (or use a local path)" in shown


def import_errors_table(row: dict[str, str]) -> str:
    """The text of ``row`` in the table ``airflow dags list-import-errors`` prints (its default output),
    the error column's wrapped lines joined again."""
    from airflow.cli.simple_table import AirflowConsole  # the same module on every supported line

    console = AirflowConsole(record=True, file=io.StringIO())
    console.print_as(data=[row], output="table")
    lines = console.export_text().splitlines()
    cells = [line.split("|", 1)[1] for line in lines[2:] if "|" in line]  # after the header and rule
    return " ".join(" ".join(cells).split())


def test_the_table_formatter_would_eat_square_brackets() -> None:
    """Why the hints have none: the check above fails for a hint written as an extra in brackets."""
    error = "pip install 'apache-airflow-providers-amazon[s3fs]'"
    shown = import_errors_table({"filepath": "x.py", "error": error})
    assert "[s3fs]" not in shown
    assert "pip install 'apache-airflow-providers-amazon'" in shown


# -- check_storage_location: what the batch operators check before anything is paid for ----------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("gs://bucket/backfills/{{ run_id }}/manifest.jsonl", r"apache-airflow-providers-google"),
        ("s3://bucket/dubs/", "apache-airflow-providers-amazon s3fs"),
        ("backfills/run1/manifest.jsonl", r"'backfills/run1/manifest.jsonl' is a relative path"),
        ("backfills/{{ run_id }}/manifest.jsonl", r"is a relative path"),
        ("./dubs/", r"is a relative path"),
        (Path("dubs"), r"'dubs' is a relative path"),
    ],
)
def test_a_store_this_install_cannot_use_or_a_relative_path_is_refused_naming_the_field(
    value: object, message: str
) -> None:
    with pytest.raises(ChamelaionConfigError, match=message) as raised:
        check_storage_location(value, "backfill: manifest_path")
    assert str(raised.value).startswith("backfill: manifest_path ")


def test_a_relative_path_error_says_why_and_what_to_give_instead() -> None:
    with pytest.raises(ChamelaionConfigError) as raised:
        check_storage_location("dubs/", "download: destination")
    message = str(raised.value)
    assert "workers and the triggerer" in message
    assert "give an absolute path or a URI such as s3://" in message


@pytest.mark.parametrize(
    "value",
    [
        "/data/backfills/{{ run_id }}/manifest.jsonl",
        "~/backfills/manifest.jsonl",
        "file:///data/dubs/",
        "{{ var.value.backfill_root }}/manifest.jsonl",  # only known once rendered: checked at task start
        "{% if params.s3 %}s3://b/m.jsonl{% else %}/data/m.jsonl{% endif %}",
        Path("/data/dubs"),
        ObjectStoragePath("file:///data/dubs/"),
    ],
)
def test_absolute_paths_usable_stores_and_templated_beginnings_pass(value: object) -> None:
    check_storage_location(value, "destination")


# -- atomic_write: the temporary name fits wherever the final name fits ---------------------------------

#: The longest file name common file systems (ext4, XFS, APFS, NTFS) allow, in bytes.
NAME_MAX = 255


@pytest.mark.parametrize("as_uri", [False, True], ids=["local", "file-uri"])
def test_a_final_name_of_255_bytes_is_written_and_leaves_no_temporary(tmp_path: Path, as_uri: bool) -> None:
    name = "r" * (NAME_MAX - len(".mp4")) + ".mp4"  # e.g. a 240-character reference_id and more
    target = tmp_path / name
    destination = ObjectStoragePath(target.as_uri()) if as_uri else target

    with atomic_write(destination) as handle:
        handle.write(b"whole output")

    assert target.read_bytes() == b"whole output"
    assert [path.name for path in tmp_path.iterdir()] == [name]


def test_a_failed_write_of_a_long_name_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / ("r" * 251 + ".mp4")

    def interrupted_write() -> None:
        with atomic_write(target) as handle:
            handle.write(b"part of it")
            raise RuntimeError("cut")

    with pytest.raises(RuntimeError, match="cut"):
        interrupted_write()
    assert list(tmp_path.iterdir()) == []
