"""Download a 2 GiB output: ``download_output`` vs ``curl -o``, from the same signed URL to the same disk.

The simulator (``--output-size`` 2 GiB) serves one completed job's output; every client writes it to a
real file in ``benchmarks/.work`` (deleted after each run). The hook runs in a fresh interpreter: it
fetches the request first (imports, connection, a kept-alive socket), then reads its current RSS,
downloads, and reads its peak RSS. curl's CPU time and peak RSS come from ``wait4``; its transfer time is
its own ``%{time_total}``.
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
    run_child,
    run_tool,
    transfer_table,
    work_dir,
)

OUTPUT_SIZE = 2 * GIB
ORDERS = (("curl", "hook"), ("hook", "curl"), ("curl", "hook"), ("hook", "curl"), ("curl", "hook"))
RSS_GOAL_MIB = 64
RATIO_GOAL = 0.8


def measure_curl(sim: SimulatorProcess, url: str, target: Path) -> dict[str, Any]:
    command = ["curl", "-sS", "-o", str(target), "-w", "%{http_code} %{time_total} %{size_download}", url]
    server_before = sim.cpu_seconds()
    run = run_tool(command)
    server_cpu = sim.cpu_seconds() - server_before
    status, seconds, size = run.stdout.split()
    if status != "200" or int(size) != OUTPUT_SIZE or target.stat().st_size != OUTPUT_SIZE:
        raise RuntimeError(f"curl download answered {status} with {size} bytes")
    return {
        "seconds": float(seconds),
        "cpu": run.user + run.system,
        "peak_kib": run.maxrss_kib,
        "growth_kib": None,
        "server_cpu": server_cpu,
    }


def measure_hook(sim: SimulatorProcess, request_id: str, target: Path) -> dict[str, Any]:
    env = child_env(AIRFLOW_CONN_CHAMELAION_DEFAULT=sim.connection_json())
    server_before = sim.cpu_seconds()
    report = run_child("benchmarks.download", [request_id, str(target)], env=env, timeout=900)
    report["server_cpu"] = sim.cpu_seconds() - server_before
    if target.stat().st_size != OUTPUT_SIZE:
        raise RuntimeError(f"the hook wrote {target.stat().st_size} bytes")
    return report


def run() -> Section:
    started = time.monotonic()
    section = Section("Download: a 2 GiB output with `download_output`")
    runs: dict[str, list[dict[str, Any]]] = {"curl": [], "hook": []}
    load = [loadavg()]
    with (
        work_dir("download") as folder,
        SimulatorProcess(phases="queued=0", output_size=OUTPUT_SIZE, name="simulator-download") as sim,
    ):
        request_id = sim.create_job()
        request = sim.call("GET", f"/api/v1/lipsync/requests/{request_id}")
        url = request["output_url"]
        for number, order in enumerate(ORDERS, 1):
            for tool in order:
                log(f"download round {number}/{len(ORDERS)}: {tool}")
                target = folder / f"{tool}-{number}.mp4"
                os.sync()  # every run starts with no dirty pages of earlier writes (ours or other work)
                try:
                    if tool == "curl":
                        runs[tool].append(measure_curl(sim, url, target))
                    else:
                        runs[tool].append(measure_hook(sim, request_id, target))
                finally:
                    target.unlink(missing_ok=True)
                last = runs[tool][-1]
                log(f"  {OUTPUT_SIZE / MB / last['seconds']:.0f} MB/s, client CPU {last['cpu']:.2f} s")
        load.append(loadavg())
    section.seconds = time.monotonic() - started

    rows = []
    summary: dict[str, dict[str, float]] = {}
    for tool, label in (("curl", "`curl -o`"), ("hook", "`ChamelaionHook.download_output`")):
        speeds = [OUTPUT_SIZE / MB / r["seconds"] for r in runs[tool]]
        growths = [r["growth_kib"] for r in runs[tool] if r["growth_kib"] is not None]
        summary[tool] = {
            "mbps": median(speeds),
            "cpu": median([r["cpu"] for r in runs[tool]]),
            "growth_mib": max(growths) / 1024 if growths else float("nan"),
        }
        rows.append(
            [
                label,
                f"**{median(speeds):.0f}**",
                ", ".join(f"{s:.0f}" for s in speeds),
                f"{summary[tool]['cpu']:.2f}",
                f"{median([r['server_cpu'] for r in runs[tool]]):.2f}",
                f"{max(r['peak_kib'] for r in runs[tool]) / 1024:.0f}",
                "n/a (not Python)" if not growths else f"**{summary[tool]['growth_mib']:.1f}**",
                "n/a" if not growths else f"{max(r['ru_maxrss_growth_kib'] for r in runs[tool]) / 1024:.1f}",
            ]
        )
    ratio = summary["hook"]["mbps"] / summary["curl"]["mbps"]
    growth = summary["hook"]["growth_mib"]
    section.lines += [
        f"Output: {OUTPUT_SIZE / GIB:.0f} GiB streamed by the simulator in 1 MiB blocks, written to a real "
        f"file on the project's disk (deleted after each run); {len(ORDERS)} rounds with the order "
        f"alternating; median shown. MB = 10^6 bytes. Load average (1 min) before / after: "
        f"{' / '.join(load)}.",
        "",
        *transfer_table(rows),
        "",
        f"Throughput ratio hook / curl: **{ratio:.2f}x**. Client CPU per GiB: hook "
        f"{summary['hook']['cpu'] / 2:.2f} s, curl {summary['curl']['cpu'] / 2:.2f} s.",
    ]
    section.goals += [
        Goal(
            "peak RSS growth of the hook's download",
            f"< {RSS_GOAL_MIB} MiB",
            f"{growth:.1f} MiB",
            growth < RSS_GOAL_MIB,
            f"{RSS_GOAL_MIB - growth:+.1f} MiB headroom",
        ),
        Goal(
            "throughput vs curl -o",
            f">= {RATIO_GOAL}x",
            f"{ratio:.2f}x ({summary['hook']['mbps']:.0f} vs {summary['curl']['mbps']:.0f} MB/s)",
            ratio >= RATIO_GOAL,
            f"{ratio - RATIO_GOAL:+.2f}x",
        ),
    ]
    return section


# -- the child ------------------------------------------------------------------------------------


def child(argv: list[str]) -> int:
    request_id, target = argv
    from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

    hook = ChamelaionHook(max_attempts=1)
    request = hook.get_request(request_id)  # warm-up: imports, connection, a kept-alive socket
    gc.collect()
    rss = PeakRss()
    rss.start()
    cpu_before = cpu_times()
    started = time.perf_counter()
    hook.download_output(request, Path(target))
    seconds = time.perf_counter() - started
    cpu_after = cpu_times()
    emit(
        {
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
