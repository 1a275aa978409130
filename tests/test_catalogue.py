"""Catalogues: formats, validation naming every row, and splitting into chunk files for mapped tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_chamelaion.catalogue import load_catalogue, split_catalogue
from airflow_provider_chamelaion.exceptions import ChamelaionConfigError


def item(n: int, **overrides: Any) -> dict[str, Any]:
    return {
        "reference_id": f"t-{n}",
        "video_url": f"https://cdn.example.com/{n}.mp4",
        "audio_url": f"https://cdn.example.com/{n}.wav",
        **overrides,
    }


def test_split_writes_chunks_that_load_back_to_the_same_items(tmp_path: Path) -> None:
    source = tmp_path / "catalogue.jsonl"
    source.write_text("".join(json.dumps(item(n, title="x")) + "\n" for n in range(2500)))

    paths = split_catalogue(str(source), str(tmp_path / "chunks"), chunk_size=1000)

    assert [Path(path).name for path in paths] == [
        "chunk-00000.jsonl",
        "chunk-00001.jsonl",
        "chunk-00002.jsonl",
    ]
    loaded = [loaded.reference_id for path in paths for loaded in load_catalogue(path)]
    assert loaded == [f"t-{n}" for n in range(2500)]
    assert [len(load_catalogue(path)) for path in paths] == [1000, 1000, 500]


def test_split_of_100000_items_stays_far_below_max_map_length(tmp_path: Path) -> None:
    catalogue = [item(n) for n in range(100_000)]

    paths = split_catalogue(catalogue, f"file://{tmp_path}/chunks", chunk_size=5000)

    assert len(paths) == 20  # mapped tasks, against Airflow's default max_map_length of 1,024
    assert paths[0].startswith("file://")


def test_split_validates_before_writing_anything(tmp_path: Path) -> None:
    with pytest.raises(ChamelaionConfigError, match="row 2: reference_id"):
        split_catalogue([item(1), item(1)], str(tmp_path / "chunks"), chunk_size=1)
    assert not (tmp_path / "chunks").exists()
    with pytest.raises(ChamelaionConfigError, match="chunk_size"):
        split_catalogue([item(1)], str(tmp_path / "chunks"), chunk_size=0)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("not-a-dict", "row 1: expected an object"),
        (item(1, audio_url="s3://bucket/a.wav"), "row 1: audio_url must be an absolute http"),
        (item(1, reference_id="a/b"), "row 1: reference_id 'a/b' contains '/'"),
        (item(1, disable_active_speaker_detection="maybe"), "row 1: disable_active_speaker_detection"),
    ],
)
def test_each_kind_of_bad_item_is_named(raw: Any, problem: str) -> None:
    with pytest.raises(ChamelaionConfigError) as raised:
        load_catalogue([raw])
    assert problem in str(raised.value)


def test_many_problems_are_summarized() -> None:
    with pytest.raises(ChamelaionConfigError) as raised:
        load_catalogue([{"reference_id": f"r{n}"} for n in range(30)])
    message = str(raised.value)
    assert message.startswith("catalogue has 60 problem(s); nothing was submitted")
    assert message.endswith("... and 40 more")


def test_formats_are_told_from_the_name_or_given(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.txt"
    path.write_text(json.dumps(item(1)) + "\n")
    with pytest.raises(ChamelaionConfigError, match="catalogue_format='jsonl' or 'csv'"):
        load_catalogue(str(path))
    assert load_catalogue(str(path), "jsonl")[0].reference_id == "t-1"
    with pytest.raises(ChamelaionConfigError, match="does not exist"):
        load_catalogue(str(tmp_path / "missing.csv"))
    with pytest.raises(ChamelaionConfigError, match="is empty"):
        load_catalogue([])


def test_any_sequence_of_items_is_a_catalogue() -> None:
    """Airflow hands an upstream task's list over as a lazy sequence, not a list."""
    from collections.abc import Sequence

    class LazySequence(Sequence[dict[str, Any]]):
        def __init__(self, rows: list[dict[str, Any]]) -> None:
            self.rows = rows

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, index: Any) -> Any:
            return self.rows[index]

    assert [loaded.row for loaded in load_catalogue(LazySequence([item(1), item(2)]))] == [1, 2]
    with pytest.raises(ChamelaionConfigError, match="got int"):
        load_catalogue(42)  # type: ignore[arg-type]
