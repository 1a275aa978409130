"""Catalogues: formats, validation naming every row, and splitting into chunk files for mapped tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_chamelaion.batch.catalogue import load_catalogue, split_catalogue
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


# -- disable_active_speaker_detection is a real boolean ---------------------------------------------


@pytest.mark.parametrize("flag", [1, 0, 1.0, "true", "false", "yes"], ids=repr)
def test_a_flag_that_is_not_a_json_boolean_is_refused_naming_the_row(flag: Any) -> None:
    catalogue = [item(1), item(2, disable_active_speaker_detection=flag)]
    with pytest.raises(ChamelaionConfigError) as raised:
        load_catalogue(catalogue)
    assert "row 2: disable_active_speaker_detection must be true or false" in str(raised.value)
    assert "row 1" not in str(raised.value)


def test_a_flag_of_1_in_a_json_lines_file_is_refused_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.jsonl"
    path.write_text(
        json.dumps(item(1, disable_active_speaker_detection=True))
        + "\n"
        + json.dumps(item(2, disable_active_speaker_detection=1))
        + "\n"
    )
    with pytest.raises(ChamelaionConfigError, match=r"row 2: disable_active_speaker_detection .*got 1\b"):
        load_catalogue(str(path))


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("true", True), ("TRUE", True), ("False", False), ("false", False), ("", None), (" true ", True)],
)
def test_csv_flags_true_false_or_empty_are_read(tmp_path: Path, cell: str, expected: bool | None) -> None:
    path = tmp_path / "catalogue.csv"
    path.write_text(
        "reference_id,video_url,audio_url,disable_active_speaker_detection\n"
        f"t-1,https://cdn.example.com/1.mp4,https://cdn.example.com/1.wav,{cell}\n"
    )
    assert load_catalogue(str(path))[0].inputs.disable_active_speaker_detection is expected


@pytest.mark.parametrize("cell", ["1", "0", "yes", "no", "maybe"])
def test_csv_flags_other_than_true_or_false_are_refused_naming_the_line(tmp_path: Path, cell: str) -> None:
    path = tmp_path / "catalogue.csv"
    path.write_text(
        "reference_id,video_url,audio_url,disable_active_speaker_detection\n"
        "t-1,https://cdn.example.com/1.mp4,https://cdn.example.com/1.wav,true\n"
        f"t-2,https://cdn.example.com/2.mp4,https://cdn.example.com/2.wav,{cell}\n"
    )
    with pytest.raises(ChamelaionConfigError) as raised:
        load_catalogue(str(path))
    assert "row 3: disable_active_speaker_detection must be true or false" in str(raised.value)
    assert f"{cell!r}" in str(raised.value)


# -- URLs: ports and user info ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://cdn.example.com:99999/1.mp4", "port 99999"),
        ("https://cdn.example.com:0/1.mp4", "port 0"),
        ("https://cdn.example.com:http/1.mp4", "port 'http'"),
        ("https://:443/1.mp4", "has no host"),
        ("https://[::1/1.mp4", "is not a valid URL"),
    ],
)
def test_a_url_with_a_bad_port_or_host_is_refused_naming_the_row_and_field(url: str, problem: str) -> None:
    with pytest.raises(ChamelaionConfigError) as raised:
        load_catalogue([item(1), item(2, video_url=url)])
    message = str(raised.value)
    assert "row 2: video_url" in message
    assert problem in message


def test_bad_urls_are_shown_without_user_info_or_query(tmp_path: Path) -> None:
    url = "ftp://editor:hunter2@cdn.example.com/1.mp4?X-Amz-Signature=s3cr3t"
    with pytest.raises(ChamelaionConfigError) as raised:
        load_catalogue([item(1, audio_url=url)])
    message = str(raised.value)
    assert "row 1: audio_url" in message
    assert "cdn.example.com/1.mp4" in message
    assert "hunter2" not in message
    assert "editor" not in message
    assert "s3cr3t" not in message


# -- reading files: JSON Lines split on \n only, CSV with a BOM and physical line numbers ------------------


def test_json_lines_with_unicode_line_separators_inside_strings_are_one_item_each(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.jsonl"
    titled = [item(n, title=f"Part\u2028{n}\u2029end") for n in (1, 2)]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in titled), encoding="utf-8")

    assert [loaded.reference_id for loaded in load_catalogue(str(path))] == ["t-1", "t-2"]


def test_json_lines_with_crlf_line_ends_and_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.jsonl"
    lines = [json.dumps(item(1)), "", json.dumps(item(3)), json.dumps(item(4, video_url="nope"))]
    path.write_bytes("\r\n".join(lines).encode() + b"\r\n")

    with pytest.raises(ChamelaionConfigError) as raised:
        load_catalogue(str(path))
    assert "row 4: video_url" in str(raised.value)
    assert "has 1 problem(s)" in str(raised.value)


def test_a_csv_with_a_utf8_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.csv"
    path.write_bytes(
        b"\xef\xbb\xbfreference_id,video_url,audio_url\r\n"
        b"t-1,https://cdn.example.com/1.mp4,https://cdn.example.com/1.wav\r\n"
        b"t-2,https://cdn.example.com/2.mp4,https://cdn.example.com/2.wav\r\n"
    )
    assert [loaded.reference_id for loaded in load_catalogue(str(path))] == ["t-1", "t-2"]


def test_csv_errors_give_physical_line_numbers_after_a_quoted_multiline_field(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.csv"
    path.write_text(
        "reference_id,title,video_url,audio_url\n"  # line 1
        't-1,"Episode 1\nPart two\nPart three",https://cdn.example.com/1.mp4,https://cdn.example.com/1.wav\n'  # 2-4
        "\n"  # line 5, blank
        "t-2,Episode 2,ftp://cdn.example.com/2.mp4,https://cdn.example.com/2.wav\n"  # line 6
        "t-1,Episode 3,https://cdn.example.com/3.mp4,https://cdn.example.com/3.wav\n"  # line 7
    )
    with pytest.raises(ChamelaionConfigError) as raised:
        load_catalogue(str(path))
    message = str(raised.value)
    assert "row 6: video_url must be an absolute http" in message
    assert "row 7: reference_id 't-1' is also on row 2" in message
    assert "has 2 problem(s)" in message


@pytest.mark.parametrize("flag", [True, False])
def test_json_booleans_and_an_absent_flag_are_accepted(flag: bool) -> None:
    loaded = load_catalogue([item(1, disable_active_speaker_detection=flag), item(2)])
    assert [entry.inputs.disable_active_speaker_detection for entry in loaded] == [flag, None]
