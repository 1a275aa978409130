"""LipsyncBatchDownloadOperator: every completed output once, named from the manifest, refreshed when expired."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_chamelaion.batch.manifest import ManifestRow, read_manifest, write_manifest
from airflow_provider_chamelaion.exceptions import ChamelaionConfigError, ChamelaionError
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.operators.batch import LipsyncBatchDownloadOperator
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from tests.conftest import API_KEY, idle
from tests.helpers.batch import run_batch
from tests.helpers.context import make_context
from tests.helpers.s3 import S3Server
from tests.operators.test_batch import items, make_batch

OUTPUT_SIZE = 3000


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return SimulatorConfig(
        api_key=API_KEY, phases=(("queued", 0.1), ("running", 0.1)), output_size=OUTPUT_SIZE
    )


@pytest.fixture
def finished_batch(simulator: Simulator, tmp_path: Path) -> dict[str, Any]:
    """A batch of six, one failed; its summary."""
    simulator.state.fail_next(1)
    run = run_batch(make_batch(tmp_path, items(6), max_failure_rate=0.5), make_context())
    assert run.error is None, run.error
    assert run.summary is not None
    return run.summary


def downloader(destination: Any, manifest: Any, **kwargs: Any) -> LipsyncBatchDownloadOperator:
    return LipsyncBatchDownloadOperator(
        task_id="download", manifest_path=manifest, destination=destination, **kwargs
    )


def outputs_in(directory: Path) -> list[Path]:
    """The files in ``directory``, without the downloads records' hidden folder."""
    return sorted(path for path in directory.iterdir() if path.name != ".chamelaion-downloads")


def output_gets(simulator: Simulator) -> int:
    return len(idle(simulator).state.calls_to("GET", "^/outputs/"))


def test_downloads_every_completed_output_named_by_reference_id(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any]
) -> None:
    out = tmp_path / "outputs"

    result = downloader(str(out), finished_batch, concurrency=3).execute(make_context())

    assert result == {"destination": str(out), "total": 5, "downloaded": 5, "skipped": 0}
    completed = [
        row.reference_id
        for row in read_manifest(finished_batch["manifest_path"])
        if row.status == "completed"
    ]
    assert len(completed) == 5
    assert sorted(path.name for path in outputs_in(out)) == sorted(f"{ref}.mp4" for ref in completed)
    assert {path.stat().st_size for path in outputs_in(out)} == {OUTPUT_SIZE}
    assert output_gets(simulator) == 5
    assert [path.suffix for path in (out / ".chamelaion-downloads").iterdir()] == [".jsonl"]  # one record


def test_a_rerun_downloads_nothing_twice_but_replaces_an_empty_file(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any]
) -> None:
    out = tmp_path / "outputs"
    downloader(str(out), finished_batch).execute(make_context())
    emptied = outputs_in(out)[0]
    emptied.write_bytes(b"")  # not an output this operator wrote
    before = output_gets(simulator)

    result = downloader(str(out), finished_batch).execute(make_context())

    assert result["downloaded"] == 1
    assert result["skipped"] == 4
    assert output_gets(simulator) - before == 1
    assert emptied.stat().st_size == OUTPUT_SIZE


def test_an_expired_output_url_is_refreshed(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any]
) -> None:
    location = finished_batch["manifest_path"]
    rows = read_manifest(location)
    for row in rows:
        if row.output_url:
            row.output_url = row.output_url.replace("sig=", "sig=0")  # refused with 403, like an expired URL
    write_manifest(location, rows)
    out = tmp_path / "outputs"

    result = downloader(str(out), location).execute(make_context())

    assert result["downloaded"] == 5
    assert len(simulator.state.calls_to("GET", r"/requests/[^/]+$")) == 5  # one refresh each
    assert {path.stat().st_size for path in outputs_in(out)} == {OUTPUT_SIZE}


def test_a_filename_template_and_object_storage(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any]
) -> None:
    destination = f"file://{tmp_path}/bucket/dubs/"

    result = downloader(
        destination, finished_batch, filename_template="{reference_id}/{request_id}.mp4"
    ).execute(make_context())

    assert result["downloaded"] == 5
    files = sorted((tmp_path / "bucket" / "dubs").rglob("*.mp4"))
    completed = {
        row.reference_id: row.request_id
        for row in read_manifest(finished_batch["manifest_path"])
        if row.status == "completed"
    }
    assert sorted((path.parent.name, path.stem) for path in files) == sorted(completed.items())
    assert not list((tmp_path / "bucket").rglob("*.part")), "no temporary file left behind"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{title}.mp4", "cannot be filled"),
        ("dub.mp4", "for both"),
        ("../{reference_id}.mp4", "relative path inside destination"),
    ],
)
def test_a_bad_filename_template_fails_before_any_download(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any], template: str, message: str
) -> None:
    with pytest.raises(ChamelaionConfigError, match=message):
        downloader(str(tmp_path / "o"), finished_batch, filename_template=template).execute(make_context())
    assert output_gets(simulator) == 0


def test_on_s3_the_destination_is_listed_once_and_each_output_put_once(
    simulator: Simulator, finished_batch: dict[str, Any], s3_server: S3Server
) -> None:
    bucket = s3_server.new_bucket()
    completed = sorted(
        row.reference_id
        for row in read_manifest(finished_batch["manifest_path"])
        if row.status == "completed"
    )
    s3_server.fs().pipe(f"{bucket}/dubs/{completed[0]}.mp4", b"x" * OUTPUT_SIZE)  # not known to be an output
    before = len(s3_server.requests)

    result = downloader(f"s3://{bucket}/dubs", finished_batch, concurrency=3).execute(make_context())
    served = s3_server.requests[before:]

    assert result == {"destination": f"s3://{bucket}/dubs", "total": 5, "downloaded": 5, "skipped": 0}
    outputs = [f"{bucket}/dubs/{ref}.mp4" for ref in completed]
    (record,) = [path for path in s3_server.fs().find(bucket) if path not in outputs]
    assert record.startswith(f"{bucket}/dubs/.chamelaion-downloads/")
    assert len([path for verb, path in served if verb == "GET" and "list-type=2" in path]) == 1
    assert sorted(path for verb, path in served if verb in ("PUT", "POST", "DELETE")) == sorted(
        [f"/{path}" for path in outputs] + [f"/{record}"]  # one put per output, and one for the record
    )
    assert output_gets(simulator) == 5
    for ref in completed:
        assert s3_server.fs().cat(f"{bucket}/dubs/{ref}.mp4").startswith(b"chamelaion-simulated-output:")


def test_on_s3_a_rerun_costs_one_listing_and_one_read_of_the_record(
    simulator: Simulator, finished_batch: dict[str, Any], s3_server: S3Server
) -> None:
    bucket = s3_server.new_bucket()
    downloader(f"s3://{bucket}/dubs", finished_batch).execute(make_context())
    before, gets_before = len(s3_server.requests), output_gets(simulator)

    result = downloader(f"s3://{bucket}/dubs", finished_batch).execute(make_context())
    served = s3_server.requests[before:]

    assert result["skipped"] == 5
    assert output_gets(simulator) == gets_before
    assert len([path for verb, path in served if verb == "GET" and "list-type=2" in path]) == 1
    assert len([path for verb, path in served if verb == "GET" and "list-type=2" not in path]) == 1
    assert [verb for verb, _ in served if verb != "GET"] == []


# -- a file is skipped only when it is known to hold this job's complete output ---------------------------


def completed_rows(summary: dict[str, Any]) -> list[ManifestRow]:
    return sorted(
        (row for row in read_manifest(summary["manifest_path"]) if row.status == "completed"),
        key=lambda row: row.reference_id,
    )


def holds_output_of(path: Path, request_id: str) -> bool:
    content = path.read_bytes()
    return len(content) == OUTPUT_SIZE and content.startswith(
        f"chamelaion-simulated-output:{request_id}:".encode()
    )


@pytest.mark.parametrize("size", [100, OUTPUT_SIZE], ids=["stale-100-bytes", "same-size"])
def test_a_file_already_at_an_outputs_name_but_not_known_to_be_it_is_replaced(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any], size: int
) -> None:
    out = tmp_path / "outputs"
    out.mkdir()
    first = completed_rows(finished_batch)[0]
    (out / f"{first.reference_id}.mp4").write_bytes(b"s" * size)  # another job's output, or someone's copy

    result = downloader(str(out), finished_batch).execute(make_context())

    assert result == {"destination": str(out), "total": 5, "downloaded": 5, "skipped": 0}
    assert holds_output_of(out / f"{first.reference_id}.mp4", str(first.request_id))


def test_a_previous_runs_output_of_another_job_is_replaced(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any]
) -> None:
    out = tmp_path / "outputs"
    downloader(str(out), finished_batch).execute(make_context())
    # The title is dubbed again: a new job for the same reference_id, which the manifest now names.
    location = finished_batch["manifest_path"]
    rows = read_manifest(location)
    redone = next(row for row in rows if row.status == "completed")
    hook = ChamelaionHook()
    new_id = hook.generate(
        "https://cdn.example.com/v2.mp4", "https://cdn.example.com/a2.wav", reference_id=redone.reference_id
    )
    simulator.state.force_status(new_id, "completed")
    redone.request_id, redone.output_url = new_id, hook.get_request(new_id).output_url
    write_manifest(location, rows)
    before = output_gets(simulator)

    result = downloader(str(out), location).execute(make_context())

    assert (result["downloaded"], result["skipped"]) == (1, 4)
    assert output_gets(simulator) - before == 1
    assert holds_output_of(out / f"{redone.reference_id}.mp4", new_id)


def test_a_partial_copy_over_an_output_is_replaced(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any]
) -> None:
    out = tmp_path / "outputs"
    downloader(str(out), finished_batch).execute(make_context())
    first = completed_rows(finished_batch)[0]
    target = out / f"{first.reference_id}.mp4"
    target.write_bytes(target.read_bytes()[: OUTPUT_SIZE // 2])  # a copy interrupted outside the provider

    result = downloader(str(out), finished_batch).execute(make_context())

    assert (result["downloaded"], result["skipped"]) == (1, 4)
    assert holds_output_of(target, str(first.request_id))


def split_manifest(summary: dict[str, Any], tmp_path: Path) -> tuple[Path, Path]:
    """The batch's completed rows as two manifests (as two mapped chunks would write them)."""
    rows = completed_rows(summary)
    halves = (tmp_path / "manifest-0.jsonl", tmp_path / "manifest-1.jsonl")
    write_manifest(halves[0], rows[:3])
    write_manifest(halves[1], rows[3:])
    return halves


def execute_off_the_main_thread(operator: LipsyncBatchDownloadOperator, context: Any) -> dict[str, Any]:
    """``operator.execute(context)`` from a thread of the test's own.

    Airflow 2 wraps ``execute`` in a guard whose state is set up per thread, on the thread that imported
    it; a worker runs each task instance in a process of its own, so the guard never sees this. The
    wrapped function is what a worker runs.
    """
    execute = type(operator).execute
    result: dict[str, Any] = getattr(execute, "__wrapped__", execute)(operator, context)
    return result


def test_mapped_downloads_into_one_destination_at_once_keep_each_others_records(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any]
) -> None:
    out = tmp_path / "outputs"
    manifests = split_manifest(finished_batch, tmp_path)
    # Every output takes a while: both tasks read the destination before either writes its record.
    simulator.state.add_fault(kind="slow", delay=0.3, path="^/outputs/", times=5)

    def run(index: int) -> dict[str, Any]:
        context = make_context(task_id="download", map_index=index)
        return execute_off_the_main_thread(downloader(str(out), str(manifests[index])), context)

    with ThreadPoolExecutor(2) as pool:
        first = list(pool.map(run, (0, 1)))
    before = output_gets(simulator)
    again = [run(0), run(1)]

    assert [(r["downloaded"], r["skipped"]) for r in first] == [(3, 0), (2, 0)]
    assert [(r["downloaded"], r["skipped"]) for r in again] == [(0, 3), (0, 2)]
    assert output_gets(simulator) == before
    assert len(list((out / ".chamelaion-downloads").iterdir())) == 2  # one record per mapped task


def test_a_name_rewritten_for_another_job_by_another_task_is_replaced(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any]
) -> None:
    """Two tasks name one file after different jobs: the newest record of the name decides."""
    out = tmp_path / "outputs"
    first = completed_rows(finished_batch)[0]
    other_id = ChamelaionHook().generate(
        "https://cdn.example.com/o.mp4", "https://cdn.example.com/o.wav", reference_id=first.reference_id
    )
    simulator.state.force_status(other_id, "completed")
    other_manifest = tmp_path / "other-manifest.jsonl"
    write_manifest(
        other_manifest,
        [
            ManifestRow(
                first.reference_id, other_id, "completed", ChamelaionHook().get_request(other_id).output_url
            )
        ],
    )

    def by(task_id: str, manifest: Any) -> dict[str, Any]:
        return downloader(str(out), manifest).execute(make_context(task_id=task_id))

    by("download", finished_batch)  # the name holds this batch's job
    by("download_other", str(other_manifest))  # another task writes its own job at the same name
    assert holds_output_of(out / f"{first.reference_id}.mp4", other_id)

    result = by("download", finished_batch)

    assert (result["downloaded"], result["skipped"]) == (1, 4)
    assert holds_output_of(out / f"{first.reference_id}.mp4", str(first.request_id))


def test_a_stopped_download_starts_nothing_more_and_keeps_what_it_delivered(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = completed_rows(finished_batch)
    real_save_output = ChamelaionHook.save_output

    def stopped_at_the_second(hook: ChamelaionHook, request: Any, *args: Any, **kwargs: Any) -> Any:
        if request.reference_id == rows[1].reference_id:
            raise KeyboardInterrupt  # what a stop (SIGTERM, a timeout) raises in the task
        return real_save_output(hook, request, *args, **kwargs)

    monkeypatch.setattr(ChamelaionHook, "save_output", stopped_at_the_second)
    manifest = tmp_path / "sorted-manifest.jsonl"
    write_manifest(manifest, rows)  # downloaded in this order, one at a time
    out = tmp_path / "outputs"

    with pytest.raises(KeyboardInterrupt):
        downloader(str(out), str(manifest), concurrency=1).execute(make_context())
    stopped_gets = output_gets(simulator)
    monkeypatch.setattr(ChamelaionHook, "save_output", real_save_output)
    result = downloader(str(out), str(manifest)).execute(make_context())

    assert stopped_gets <= 2  # the first, and at most the one already started: the queue was dropped
    # The first was delivered before the stop and is known; one still running at the stop may not be.
    assert 1 <= result["skipped"] <= stopped_gets
    assert result["downloaded"] + result["skipped"] == 5
    assert all(holds_output_of(out / f"{row.reference_id}.mp4", str(row.request_id)) for row in rows)


# -- outputs that cannot be delivered --------------------------------------------------------------------


@pytest.fixture
def batch_with_an_empty_output(simulator: Simulator, tmp_path: Path) -> tuple[dict[str, Any], str]:
    """A batch of four whose first job completes with a 0-byte output; its summary and that job's id."""
    simulator.state.empty_output_next(1)
    run = run_batch(make_batch(tmp_path, items(4)), make_context())
    assert run.error is None, run.error
    assert run.summary is not None
    (empty,) = [job.id for job in idle(simulator).state.jobs.values() if job.output_size == 0]
    return run.summary, empty


def test_an_empty_output_fails_its_item_by_name_and_leaves_nothing_at_its_name(
    simulator: Simulator, tmp_path: Path, batch_with_an_empty_output: tuple[dict[str, Any], str]
) -> None:
    summary, empty_id = batch_with_an_empty_output
    (empty_row,) = [row for row in read_manifest(summary["manifest_path"]) if row.request_id == empty_id]
    out = tmp_path / "outputs"

    with pytest.raises(ChamelaionError) as raised:
        downloader(str(out), summary).execute(make_context())

    message = str(raised.value)
    assert message.startswith("1 of 4 downloads failed")
    assert f"{empty_row.reference_id}:" in message
    assert empty_id in message
    assert "the API returned an empty output" in message
    assert sorted(path.name for path in outputs_in(out)) == sorted(
        f"{row.reference_id}.mp4"
        for row in read_manifest(summary["manifest_path"])
        if row.request_id != empty_id
    )
    assert [path.name for path in out.iterdir() if path.name.endswith(".part")] == []


def test_a_rerun_after_an_empty_output_asks_for_that_output_only_and_fails_again(
    simulator: Simulator, tmp_path: Path, batch_with_an_empty_output: tuple[dict[str, Any], str]
) -> None:
    summary, empty_id = batch_with_an_empty_output
    out = tmp_path / "outputs"
    with pytest.raises(ChamelaionError):
        downloader(str(out), summary).execute(make_context())
    before = output_gets(simulator)

    with pytest.raises(ChamelaionError, match=f"1 of 1 downloads failed .*{empty_id}"):
        downloader(str(out), summary).execute(make_context())

    assert output_gets(simulator) - before == 1  # the other three are recorded as delivered


def test_a_240_character_reference_id_is_downloaded(simulator: Simulator, tmp_path: Path) -> None:
    catalogue = items(2)
    for number, entry in enumerate(catalogue):
        entry["reference_id"] = f"{number}-" + "r" * 238  # 240 characters, a valid reference_id
    run = run_batch(make_batch(tmp_path, catalogue), make_context())
    assert run.error is None, run.error
    out = tmp_path / "outputs"

    result = downloader(str(out), run.summary).execute(make_context())

    assert (result["downloaded"], result["skipped"]) == (2, 0)
    names = sorted(path.name for path in outputs_in(out))
    assert names == [f"{entry['reference_id']}.mp4" for entry in catalogue]
    assert {len(name.encode()) for name in names} == {244}


# -- the destination is checked before anything is fetched ------------------------------------------------


@pytest.mark.usefixtures("plain_install")
@pytest.mark.parametrize(
    ("destination", "message"),
    [
        (
            "gs://dubs/{{ ds }}/",
            r"download: destination 'gs://dubs/\{\{ ds \}\}/' is on 'gs://' object storage.*apache-airflow-providers-google",
        ),
        ("s3://dubs/", "apache-airflow-providers-amazon s3fs"),
        (
            "dubs/{{ ds }}/",
            r"download: destination 'dubs/\{\{ ds \}\}/' is a relative path.*give an absolute path or a URI",
        ),
    ],
)
def test_a_destination_that_cannot_be_used_fails_the_dag_at_parse(destination: str, message: str) -> None:
    with pytest.raises(ChamelaionConfigError, match=message):
        downloader(destination, "/data/manifest.jsonl")


@pytest.mark.usefixtures("plain_install")
@pytest.mark.parametrize(
    ("rendered", "message"),
    [
        ("s3://dubs/2026-11-02/", "apache-airflow-providers-amazon s3fs"),
        ("dubs/2026-11-02/", "is a relative path"),
    ],
)
def test_a_rendered_destination_is_checked_before_the_manifest_is_read_or_anything_fetched(
    simulator: Simulator, tmp_path: Path, rendered: str, message: str
) -> None:
    operator = downloader("{{ var.value.dubs }}", str(tmp_path / "missing-manifest.jsonl"))
    operator.destination = rendered  # what the template rendered to

    with pytest.raises(ChamelaionConfigError, match=message):
        operator.execute(make_context())
    assert simulator.state.calls == []


def test_the_batch_task_itself_downloads_when_given_download_to(simulator: Simulator, tmp_path: Path) -> None:
    out = tmp_path / "dubs"
    simulator.state.fail_next(1)

    run = run_batch(
        make_batch(tmp_path, items(6), max_failure_rate=0.5, download_to=str(out), download_concurrency=2),
        make_context(),
    )

    assert run.error is None, run.error
    assert run.summary is not None
    assert run.summary["downloads"] == {"destination": str(out), "total": 5, "downloaded": 5, "skipped": 0}
    assert len(outputs_in(out)) == 5
    gets = output_gets(simulator)

    cleared = run_batch(
        make_batch(tmp_path, items(6), max_failure_rate=0.5, download_to=str(out)), make_context(try_number=2)
    )

    assert cleared.summary is not None
    # The clear submits the failed item again and downloads its output; the five others are not fetched.
    assert cleared.summary["downloads"] == {
        "destination": str(out),
        "total": 6,
        "downloaded": 1,
        "skipped": 5,
    }
    assert output_gets(simulator) == gets + 1


def test_download_to_needs_the_wait_and_a_usable_place(tmp_path: Path) -> None:
    with pytest.raises(ChamelaionConfigError, match="download_to needs wait_for_completion=True"):
        make_batch(tmp_path, items(1), download_to=str(tmp_path), wait_for_completion=False)
    with pytest.raises(ChamelaionConfigError, match=r"download_to 'dubs/' is a relative path"):
        make_batch(tmp_path, items(1), download_to="dubs/")
