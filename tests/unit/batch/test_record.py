"""The downloads record: written as downloads complete, newest entry wins, unreadable lines never trusted."""

from __future__ import annotations

import json
from pathlib import Path

from airflow_provider_chamelaion.batch.record import (
    Delivered,
    DownloadsRecord,
    holds_output,
    newest_entries,
    parse_record,
    record_name,
)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def on_disk(path: Path) -> list[str]:
    """The names the record file holds now (nothing if it was never written)."""
    if not path.exists():
        return []
    return [json.loads(line)["name"] for line in path.read_text().splitlines()]


def test_the_record_is_written_every_flush_every_downloads_not_only_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / ".chamelaion-downloads" / "task.jsonl"
    record = DownloadsRecord(path, flush_every=3, flush_seconds=3600, clock=Clock())

    record.add("a.mp4", "r-a", 10)
    record.add("b.mp4", "r-b", 10)
    assert on_disk(path) == []
    record.add("c.mp4", "r-c", 10)
    assert on_disk(path) == ["a.mp4", "b.mp4", "c.mp4"]  # a kill from here on loses none of these
    record.add("d.mp4", "r-d", 10)
    assert on_disk(path) == ["a.mp4", "b.mp4", "c.mp4"]
    record.flush()
    assert on_disk(path) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]
    assert [p.name for p in path.parent.iterdir()] == ["task.jsonl"]  # written atomically, no temporary left


def test_a_slow_batch_writes_its_record_once_flush_seconds_have_passed(tmp_path: Path) -> None:
    path = tmp_path / "record.jsonl"
    clock = Clock()
    record = DownloadsRecord(path, flush_every=100, flush_seconds=30, clock=clock)

    record.add("a.mp4", "r-a", 10)
    clock.now += 29
    record.add("b.mp4", "r-b", 10)
    assert on_disk(path) == []
    clock.now += 1
    record.add("c.mp4", "r-c", 10)
    assert on_disk(path) == ["a.mp4", "b.mp4", "c.mp4"]


def test_nothing_new_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "record.jsonl"
    DownloadsRecord(path, [Delivered("a.mp4", "r-a", 10, 1.0)]).flush()
    assert not path.exists()  # a re-run that downloads nothing costs no put


def test_earlier_entries_are_kept_and_a_new_download_replaces_its_names_entry(tmp_path: Path) -> None:
    path = tmp_path / "record.jsonl"
    record = DownloadsRecord(path, [Delivered("a.mp4", "r-old", 10, 1.0), Delivered("b.mp4", "r-b", 10, 1.0)])

    record.add("a.mp4", "r-new", 12)
    record.flush()

    entries = {entry.name: entry for entry in parse_record(path.read_bytes())}
    assert sorted(entries) == ["a.mp4", "b.mp4"]
    assert (entries["a.mp4"].request_id, entries["a.mp4"].size) == ("r-new", 12)


def test_the_newest_entry_of_any_record_decides() -> None:
    mine = [Delivered("a.mp4", "r-1", 10, 1000.0), Delivered("b.mp4", "r-b", 10, 1000.0)]
    theirs = [Delivered("a.mp4", "r-2", 10, 2000.0)]  # another task wrote a.mp4 later

    newest = newest_entries([mine, theirs])

    assert not holds_output(newest, {"a.mp4": 10, "b.mp4": 10}, "a.mp4", "r-1")
    assert holds_output(newest, {"a.mp4": 10, "b.mp4": 10}, "a.mp4", "r-2")
    assert holds_output(newest, {"a.mp4": 10, "b.mp4": 10}, "b.mp4", "r-b")


def test_a_file_whose_size_changed_or_that_is_gone_is_not_known() -> None:
    newest = newest_entries([[Delivered("a.mp4", "r-1", 10, 1.0)]])
    assert not holds_output(newest, {"a.mp4": 5}, "a.mp4", "r-1")  # cut short, or overwritten
    assert not holds_output(newest, {}, "a.mp4", "r-1")
    assert not holds_output(newest, {"b.mp4": 10}, "b.mp4", "r-1")  # no entry at all


def test_lines_that_are_not_entries_are_ignored_never_trusted() -> None:
    content = (
        b'{"name": "a.mp4", "request_id": "r-1", "size": 10, "written_at": 1.0}\n'
        b'{"name": "b.mp4", "request_id": "r-2", "size": 0, "written_at": 1.0}\n'  # an empty output is never one
        b'{"name": "c.mp4", "request_id": "r-3"}\n'
        b"{not json\n"
    )
    assert [entry.name for entry in parse_record(content)] == ["a.mp4"]


def test_each_mapped_task_has_its_own_record_the_same_every_run() -> None:
    names = {record_name("dag", "download", index) for index in (-1, 0, 1)}
    assert len(names) == 3
    assert record_name("dag", "download", 0) == record_name("dag", "download", 0)
    assert record_name("dag", "download", None) == record_name("dag", "download", -1)
    assert all(name.startswith(".chamelaion-downloads/") and name.endswith(".jsonl") for name in names)
