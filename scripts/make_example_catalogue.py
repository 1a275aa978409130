"""Write example_dags/data/catalogue.jsonl: the example catalogue backfill's 2,000 (title, language) items.

Deterministic (no randomness, no clock), so re-running it reproduces the committed file byte for byte::

    python scripts/make_example_catalogue.py
"""

from __future__ import annotations

import json
from pathlib import Path

TITLES = 400
LANGUAGES = ("fr", "de", "es", "ja", "pt")
TARGET = Path(__file__).resolve().parent.parent / "example_dags" / "data" / "catalogue.jsonl"


def rows() -> list[dict[str, str]]:
    return [
        {
            "title": f"title-{number:04d}",
            "language": language,
            "video_url": f"https://cdn.example.com/catalogue/title-{number:04d}.mp4",
            "audio_url": f"https://cdn.example.com/catalogue/title-{number:04d}-{language}.wav",
            "reference_id": f"catalogue-title-{number:04d}-{language}",
        }
        for number in range(TITLES)
        for language in LANGUAGES
    ]


def main() -> None:
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text("".join(json.dumps(row) + "\n" for row in rows()))
    print(f"wrote {TITLES * len(LANGUAGES)} items to {TARGET}")


if __name__ == "__main__":
    main()
