"""Upload a 2 GiB video + audio: ``generate_with_media`` vs ``curl -F`` vs requests' own ``files=``.

Every client posts the same two files to the same simulator endpoint. Each Python client runs in a
fresh interpreter: it warms up (imports, connection, one small upload of the audio as both parts),
then reads its current RSS, uploads, and reads its peak RSS (``ru_maxrss``); growth is the difference.
curl's CPU time and peak RSS come from ``wait4``; its transfer time is its own ``%{time_total}``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    GIB,
    MB,
    MIB,
    Goal,
    PeakRss,
    Section,
    SimulatorProcess,
    child_env,
    cpu_times,
    emit,
    loadavg,
    log,
    median,
    memory_available_kib,
    run_child,
    run_tool,
    transfer_table,
    warm_page_cache,
    work_dir,
)

VIDEO_SIZE = 2 * GIB
AUDIO_SIZE = 8 * MIB
PATH = "/api/v1/lipsync/generate-with-media"
ORDERS = (("curl", "hook"), ("hook", "curl"), ("curl", "hook"), ("hook", "curl"), ("curl", "hook"))
RSS_GOAL_MIB = 64
RATIO_GOAL = 0.9


def make_media(folder: Path) -> tuple[Path, Path]:
    """A sparse 2 GiB video (truncate) and a small audio file of real random bytes."""
    video, audio = folder / "episode.mp4", folder / "dub.wav"
    video.touch()
    os.truncate(video, VIDEO_SIZE)
    audio.write_bytes(b"RIFF" + os.urandom(AUDIO_SIZE - 4))
    return video, audio


def measure_curl(sim: SimulatorProcess, video: Path, audio: Path) -> dict[str, Any]:
    command = [
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{time_total} %{size_upload}",
        "-H",
        f"x-api-key: {sim.api_key}",
        "-F",
        f"video=@{video};type=video/mp4",
        "-F",
        f"audio=@{audio};type=audio/wav",
        sim.origin + PATH,
    ]
    server_before = sim.cpu_seconds()
    run = run_tool(command)
    server_cpu = sim.cpu_seconds() - server_before
    status, seconds, sent = run.stdout.split()
    if status != "200":
        raise RuntimeError(f"curl upload answered {status}")
    return {
        "seconds": float(seconds),
        "bytes": int(sent),
        "cpu": run.user + run.system,
        "peak_kib": run.maxrss_kib,
        "growth_kib": None,
        "server_cpu": server_cpu,
    }


def measure_python(mode: str, sim: SimulatorProcess, video: Path, audio: Path) -> dict[str, Any]:
    env = child_env(AIRFLOW_CONN_CHAMELAION_DEFAULT=sim.connection_json())
    server_before = sim.cpu_seconds()
    report = run_child("benchmarks.upload", [mode, str(video), str(audio)], env=env, timeout=900)
    report["server_cpu"] = sim.cpu_seconds() - server_before  # includes the 16 MiB warm-up upload
    return report


def run() -> Section:
    started = time.monotonic()
    section = Section("Upload: 2 GiB video + 8 MiB audio with `generate_with_media`")
    runs: dict[str, list[dict[str, Any]]] = {"curl": [], "hook": [], "requests-files": []}
    load = [loadavg()]
    with work_dir("upload") as folder:
        video, audio = make_media(folder)
        warm_page_cache(video)
        with SimulatorProcess(name="simulator-upload") as sim:
            for number, order in enumerate(ORDERS, 1):
                for tool in order:
                    log(f"upload round {number}/{len(ORDERS)}: {tool}")
                    if tool == "curl":
                        runs[tool].append(measure_curl(sim, video, audio))
                    else:
                        runs[tool].append(measure_python(tool, sim, video, audio))
                    last = runs[tool][-1]
                    log(f"  {VIDEO_SIZE / MB / last['seconds']:.0f} MB/s, client CPU {last['cpu']:.2f} s")
            # requests' files= holds the whole body in memory (several GiB): once, and only with room.
            if memory_available_kib() > 12 * GIB // 1024:
                log("upload: requests files= (the in-memory control, once)")
                runs["requests-files"].append(measure_python("requests-files", sim, video, audio))
            load.append(loadavg())
    section.seconds = time.monotonic() - started
    total = VIDEO_SIZE + AUDIO_SIZE

    def mbps(run: dict[str, Any]) -> float:
        return total / MB / float(run["seconds"])

    rows = []
    summary: dict[str, dict[str, float]] = {}
    for tool, label in (
        ("curl", "`curl -F`"),
        ("hook", "`ChamelaionHook.generate_with_media`"),
        ("requests-files", "requests `files=` (control, 1 run)"),
    ):
        if not runs[tool]:
            rows.append([label, "skipped (not enough free memory)", "", "", "", "", ""])
            continue
        speeds = [mbps(r) for r in runs[tool]]
        growths = [r["growth_kib"] for r in runs[tool] if r["growth_kib"] is not None]
        summary[tool] = {
            "mbps": median(speeds),
            "cpu": median([r["cpu"] for r in runs[tool]]),
            "growth_mib": max(growths) / 1024 if growths else float("nan"),
            "peak_mib": max(r["peak_kib"] for r in runs[tool]) / 1024,
        }
        rows.append(
            [
                label,
                f"**{median(speeds):.0f}**",
                ", ".join(f"{s:.0f}" for s in speeds),
                f"{summary[tool]['cpu']:.2f}",
                f"{median([r['server_cpu'] for r in runs[tool]]):.2f}",
                f"{summary[tool]['peak_mib']:.0f}",
                "n/a (not Python)" if not growths else f"**{summary[tool]['growth_mib']:.1f}**",
                "n/a" if not growths else f"{max(r['ru_maxrss_growth_kib'] for r in runs[tool]) / 1024:.1f}",
            ]
        )
    section.lines += [
        f"Body: {VIDEO_SIZE / GIB:.0f} GiB sparse video (`os.truncate`) + {AUDIO_SIZE // MIB} MiB random "
        f"audio, the same files for every client; {len(ORDERS)} rounds with the order alternating "
        f"({', '.join('/'.join(o) for o in ORDERS)}); median shown. MB = 10^6 bytes. "
        f"Load average (1 min) before / after: {' / '.join(load)} "
        "(the machine is shared: other work runs on the same 2 cores).",
        "",
        *transfer_table(rows),
        "",
    ]
    if "curl" in summary and "hook" in summary:
        ratio = summary["hook"]["mbps"] / summary["curl"]["mbps"]
        growth = summary["hook"]["growth_mib"]
        section.lines.append(
            f"Throughput ratio hook / curl: **{ratio:.2f}x**. Client CPU per GiB: hook "
            f"{summary['hook']['cpu'] / (total / GIB):.2f} s, curl {summary['curl']['cpu'] / (total / GIB):.2f} s."
        )
        if "requests-files" in summary:
            section.lines.append(
                f"requests `files=` grew peak RSS by {summary['requests-files']['growth_mib']:.0f} MiB "
                f"({summary['requests-files']['growth_mib'] * MIB / total:.1f}x the body) at "
                f"{summary['requests-files']['mbps']:.0f} MB/s."
            )
        section.goals += [
            Goal(
                "peak RSS growth of the hook's upload",
                f"< {RSS_GOAL_MIB} MiB",
                f"{growth:.1f} MiB",
                growth < RSS_GOAL_MIB,
                f"{RSS_GOAL_MIB - growth:+.1f} MiB headroom",
            ),
            Goal(
                "throughput vs curl -F",
                f">= {RATIO_GOAL}x",
                f"{ratio:.2f}x ({summary['hook']['mbps']:.0f} vs {summary['curl']['mbps']:.0f} MB/s)",
                ratio >= RATIO_GOAL,
                f"{ratio - RATIO_GOAL:+.2f}x",
            ),
        ]
    return section


# -- the child ------------------------------------------------------------------------------------


def _hook_uploader() -> Any:
    from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

    hook = ChamelaionHook(max_attempts=1, timeout=(10.0, 600.0))
    return hook.generate_with_media


def _requests_files_uploader() -> Any:
    import json

    import requests

    conn = json.loads(os.environ["AIRFLOW_CONN_CHAMELAION_DEFAULT"])
    url = conn["host"].rstrip("/") + "/v1/lipsync/generate-with-media"
    session = requests.Session()

    def upload(video: str, audio: str) -> str:
        with open(video, "rb") as video_file, open(audio, "rb") as audio_file:
            response = session.post(
                url,
                files={
                    "video": (os.path.basename(video), video_file, "video/mp4"),
                    "audio": (os.path.basename(audio), audio_file, "audio/wav"),
                },
                headers={"x-api-key": conn["password"]},
                timeout=(10, 600),
            )
        response.raise_for_status()
        return str(response.json()["request_id"])

    return upload


def child(argv: list[str]) -> int:
    mode, video, audio = argv
    upload = {"hook": _hook_uploader, "requests-files": _requests_files_uploader}[mode]()
    upload(audio, audio)  # warm-up: imports, connection, a kept-alive socket
    gc.collect()
    rss = PeakRss()
    rss.start()
    cpu_before = cpu_times()
    started = time.perf_counter()
    request_id = upload(video, audio)
    seconds = time.perf_counter() - started
    cpu_after = cpu_times()
    emit(
        {
            "mode": mode,
            "request_id": request_id,
            "seconds": seconds,
            "cpu": (cpu_after[0] - cpu_before[0]) + (cpu_after[1] - cpu_before[1]),
            **rss.report(),
        }
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=argparse.REMAINDER, required=True)
    sys.exit(child(parser.parse_args().child))
