"""``python -m benchmarks [NAME ...]``: run the benchmarks (all by default) and write ``results.md``.

Names: imports, upload, download, triggers, clients, submit, batch. Every figure and ratio in ``results.md``
comes from the same run. Running some of them only (``python -m benchmarks batch``) replaces those
sections in ``results.md`` and keeps the others' figures (and the top Goals table) as they were.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType

from benchmarks import batch_deployment, clients, download, imports, submit, triggers, upload
from benchmarks.common import RESULTS, WORK, Goal, Section, log, machine_lines, table

BENCHMARKS: dict[str, str] = {
    "imports": "import time of the operator and sensor modules",
    "upload": "2 GiB upload with generate_with_media vs curl -F and requests files=",
    "download": "2 GiB download with download_output vs curl -o",
    "triggers": "1,000 LipsyncRequestTriggers vs 1,000 HttpSensorTriggers in one event loop",
    "clients": "micro-benchmark of async HTTP client choices (data for the trigger figure)",
    "submit": "a 10,000-item batch's submissions against a POST rate limit, and its re-runs",
    "batch": "catalogue backfill, batch vs per-item, on PostgreSQL + Celery + S3 (results-batch.md)",
}


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # so every finally stops its simulator


def _failed(name: str, seconds: float) -> Section:
    section = Section(f"{name}: FAILED", seconds=seconds)
    section.lines += ["```", traceback.format_exc()[-4000:].rstrip(), "```"]
    section.goals.append(Goal(name, "runs", "failed", False, "see the traceback"))
    return section


def merge_sections(existing: str, sections: list[Section]) -> str:
    """``existing`` with each of ``sections`` replacing the ``## `` block of the same title (or appended)."""
    blocks: list[list[str]] = [[]]
    for line in existing.rstrip().splitlines():
        if line.startswith("## "):
            blocks.append([])
        blocks[-1].append(line)
    fresh = {f"## {section.title}": section.markdown() for section in sections}
    out: list[str] = []
    for block in blocks:
        heading = block[0] if block else ""
        out += fresh.pop(heading) if heading in fresh else block
    for lines in fresh.values():
        out += ["", *lines]
    return "\n".join(out).rstrip() + "\n"


#: Benchmarks whose figures live in a file of their own; results.md only points there, so that each
#: figure is written in one place.
ELSEWHERE = {"batch": "results-batch.md"}
TITLES = {"batch": batch_deployment.SCALE_TITLE}
#: The machine's load average when the run began (the Machine table's "at start").
LOAD_AT_START: list[float] = []


def pointer(section: Section, name: str) -> Section:
    """What results.md says of a benchmark whose figures live in another file."""
    verdicts = [goal.verdict.strip("*") for goal in section.goals]
    summary = f" ({verdicts.count('met')} of {len(verdicts)} goals met)" if verdicts else ""
    return Section(
        section.title,
        lines=[
            f"`python -m benchmarks {name}` writes its figures, goals and method to "
            f"[`{ELSEWHERE[name]}`]({ELSEWHERE[name]}){summary}."
        ],
        seconds=section.seconds,
    )


def write_results(
    sections: list[Section], names: list[str], started: float, began: datetime.datetime
) -> None:
    """Rewrite results.md from this run's sections: the whole file when every benchmark it holds ran
    (the Goals table then lists this run's goals only), else only the sections that ran."""
    here = set(BENCHMARKS) - set(ELSEWHERE)
    if names and not here <= set(names) and RESULTS.exists():
        RESULTS.write_text(merge_sections(RESULTS.read_text(), sections))
        return
    goals = [goal for section in sections for goal in section.goals]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m benchmarks{' ' + ' '.join(names) if names else ''}`) on "
        f"{began:%Y-%m-%d %H:%M} UTC; total run time {time.monotonic() - started:.0f} s. Every figure and "
        "ratio below was measured in this run, against the simulator "
        "(`python -m airflow_provider_chamelaion.simulator`) in a subprocess on loopback.",
        "",
        "## Machine",
        "",
        *machine_lines(LOAD_AT_START),
        "",
        "## Goals",
        "",
        *table(
            ["goal", "target", "measured", "verdict", "margin"],
            [[g.name, g.target, g.measured, g.verdict, g.margin] for g in goals],
        ),
        "",
    ]
    for section in sections:
        lines += section.markdown()
    for name, file in ELSEWHERE.items():
        if names and name not in names:
            note = f"`python -m benchmarks {name}` writes its figures to [`{file}`]({file}); not run here."
            lines += [f"## {TITLES[name]}", "", note, ""]
    RESULTS.write_text("\n".join(lines).rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="benchmarks to run (default: all): " + "; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()),
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    names: list[str] = args.names or list(BENCHMARKS)
    signal.signal(signal.SIGTERM, _terminate)
    began = datetime.datetime.now(datetime.timezone.utc)
    LOAD_AT_START[:] = os.getloadavg()
    started = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    sections: list[Section] = []
    anchor_ms: float | None = None

    def run_clients() -> Section:
        return clients.run(anchor_ms)

    runners: dict[str, Callable[[], Section]] = {
        "imports": imports.run,
        "upload": upload.run,
        "download": download.run,
        "triggers": triggers.run,
        "clients": run_clients,
        "submit": submit.run,
        "batch": batch_deployment.run,
    }
    try:
        for name in BENCHMARKS:
            if name not in names:
                continue
            log(f"== {name}: {BENCHMARKS[name]}")
            begun = time.monotonic()
            try:
                section = runners[name]()
            except Exception:
                log(f"{name} FAILED:\n{traceback.format_exc()}")
                section = _failed(name, time.monotonic() - begun)
            if name not in ELSEWHERE:
                section.lines[:0] = [
                    f"Command: `python -m benchmarks {name}` (also part of `make bench`).",
                    "",
                ]
            moved = name in ELSEWHERE and not section.title.endswith("FAILED")
            sections.append(pointer(section, name) if moved else section)
            if name == "triggers" and section.goals:
                anchor_ms = triggers.LAST_ANCHOR_MS_PER_POLL
            log(f"== {name} done in {time.monotonic() - begun:.0f} s")
    finally:
        if sections:
            write_results(sections, args.names, started, began)
            log(
                f"wrote {RESULTS.relative_to(os.getcwd()) if RESULTS.is_relative_to(os.getcwd()) else RESULTS}"
            )
        for leftover in ("upload", "download"):
            shutil.rmtree(WORK / leftover, ignore_errors=True)
    failed = [goal for goal in (g for s in sections for g in s.goals) if goal.name in BENCHMARKS]
    log(f"all done in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
