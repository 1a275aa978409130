"""Catalogue backfill, batch vs per-item, on the deployment users run at this scale.

``python -m benchmarks.batch_deployment [PER_ITEM [BATCH_SIZE ...]]`` (or ``python -m benchmarks batch``,
sizes from ``BENCH_PER_ITEM`` and ``BENCH_BATCH_SIZES``) starts PostgreSQL, Redis and moto's S3 server
(tests/deployment/harness/scale_deployment.py), an Airflow deployment with CeleryExecutor and two
workers, and the simulator in this process. Each batch size runs ``bench_batch_file`` twice (the second is the re-run);
the per-item pattern (``bench_per_item``) runs twice at ``PER_ITEM`` items. Writes
``benchmarks/results-batch.md`` and ``benchmarks/batch-scale.png``.

Measured per run: wall time, task instances, trigger rows (distinct ids sampled every second), XCom
rows, API calls by kind, and CPU seconds per Airflow component (the process tree's own and reaped
children's user+system time, difference across the run).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from benchmarks.common import Goal, Section, table
from tests.deployment.harness.airflow_deployment import AirflowDeployment

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results-batch.md"
API_KEY = "bench-key"


def cpu_seconds(deployment: AirflowDeployment) -> dict[str, float]:
    totals: dict[str, float] = {}
    for name, component in deployment.components.items():
        total = 0.0
        try:
            root = psutil.Process(component.pid)
            for proc in [root, *root.children(recursive=True)]:
                with_children = proc.cpu_times()
                total += with_children.user + with_children.system
                total += with_children.children_user + with_children.children_system
        except psutil.Error:
            pass
        totals[name] = total
    return totals


def trigger_and_wait(
    deployment: AirflowDeployment, dag_id: str, conf: dict[str, Any] | None = None
) -> tuple[str, str]:
    """Start one run of ``dag_id`` through the REST API and wait for it to end: (run id, final state)."""
    body: dict[str, Any] = {"logical_date": datetime.now(timezone.utc).isoformat()}
    if conf:
        body["conf"] = conf
    run_id = deployment.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]
    while True:
        state = deployment.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
        if state in ("success", "failed"):
            return run_id, state
        deployment.check_alive()
        time.sleep(1)


# -- the deployment users run at this scale: PostgreSQL, CeleryExecutor + Redis, two workers, S3 --------

#: Same simulator settings for every run of the scale benchmark (batch and per-item): jobs take 10 s
#: (queued 2 s, running 8 s) and the account processes at most K at once; outputs are 16 KiB.
SCALE_K = 1000
SCALE_PHASES = (("queued", 2.0), ("running", 8.0))
SCALE_OUTPUT = 16 * 1024
SCALE_POLL = 5.0
JOB_SECONDS = sum(seconds for _, seconds in SCALE_PHASES)
SCALE_PLOT = ROOT / "benchmarks" / "batch-scale.png"


def _scale_run(
    deployment: Any, sim: Simulator, dag_id: str, conf: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One DAG run on the scale deployment; also samples items completed (outputs downloaded) per second."""
    calls_before = len(sim.state.calls)
    jobs_before = len(sim.state.jobs)
    cpu_before = cpu_seconds(deployment)
    triggers: set[int] = set()
    #: (seconds since the run was triggered, API calls by kind so far), every second.
    samples: list[tuple[float, Counter[str]]] = []
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        seen, kinds = calls_before, Counter[str]()
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a lost sample makes the trigger count a lower bound
                triggers.update(deployment.trigger_ids())
            with sim.state.lock:
                new = sim.state.calls[seen:]
            seen += len(new)
            kinds.update(_kind(call) for call in new)
            samples.append((round(time.monotonic() - started, 1), Counter(kinds)))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run_id, state = trigger_and_wait(deployment, dag_id, conf)
    wall = time.monotonic() - started
    stop.set()
    sampler.join()
    cpu_after = cpu_seconds(deployment)
    kinds: Counter[str] = Counter()
    for call in sim.state.calls[calls_before:]:
        kinds[_kind(call)] += 1
    trigger_rows = len(triggers)
    return {
        "state": state,
        "wall_s": round(wall, 1),
        "task_instances": deployment.db_count("SELECT COUNT(*) FROM task_instance WHERE run_id = %s", run_id),
        "failed_tis": deployment.db_count(
            "SELECT COUNT(*) FROM task_instance WHERE run_id = %s AND state = 'failed'", run_id
        ),
        "trigger_rows": trigger_rows,
        "xcom_rows": deployment.db_count("SELECT COUNT(*) FROM xcom WHERE run_id = %s", run_id),
        "jobs_created": len(sim.state.jobs) - jobs_before,
        "api_calls": sum(kinds.values()),
        "calls_by_kind": dict(kinds),
        "wait": wait_calls(samples, dag_id) if trigger_rows else None,
        "cpu_s": {name: round(cpu_after[name] - cpu_before.get(name, 0.0), 1) for name in cpu_after},
        "progress": [(t, counts["download"]) for t, counts in samples],
    }


def wait_calls(samples: list[tuple[float, Counter[str]]], dag_id: str) -> dict[str, float]:
    """The API calls made while the run waited on its jobs, and per poll cycle (``SCALE_POLL`` seconds).

    The batch waits in listing pages, from its last submission to its last listing call (the listing
    pages of the reconcile come before the submissions, so they are left out). The per-item pattern waits
    in status GETs, from its first to its last. From the per-second samples: exact counts, windows to
    the second.
    """
    per_item = dag_id == "bench_per_item"
    kind = "status GET" if per_item else "list"
    final_posts = samples[-1][1]["POST"]
    begin = next(
        i for i, (_, k) in enumerate(samples) if (k[kind] > 0 if per_item else k["POST"] == final_posts)
    )
    base_time, base = samples[begin - 1] if begin else (0.0, Counter[str]())
    end = max(i for i in range(len(samples)) if samples[i][1][kind] > (samples[i - 1][1][kind] if i else 0))
    calls = samples[end][1][kind] - base[kind]
    cycles = max(1.0, (samples[end][0] - base_time) / SCALE_POLL)
    return {
        "calls": calls,
        "seconds": round(samples[end][0] - base_time, 1),
        "per_cycle": round(calls / cycles, 1),
    }


def _kind(call: Any) -> str:
    if call.method == "POST":
        return "POST"
    if call.path.endswith("/requests"):
        return "list"
    return "download" if call.path.startswith("/outputs/") else "status GET"


def _write_catalogue(services: Any, items: int, prefix: str) -> str:
    """A JSON Lines catalogue of ``items`` rows on S3 (the example catalogue's URLs, cycled)."""
    import json

    source = [
        json.loads(line)
        for line in (ROOT / "example_dags" / "data" / "catalogue.jsonl").read_text().splitlines()
    ]
    lines = [
        json.dumps(
            {
                "video_url": source[n % len(source)]["video_url"],
                "audio_url": source[n % len(source)]["audio_url"],
                "reference_id": f"{prefix}-{n:06d}",
            }
        )
        for n in range(items)
    ]
    path = f"{services.bucket}/catalogues/{prefix}.jsonl"
    services.s3().pipe(path, ("\n".join(lines) + "\n").encode())
    return f"s3://{path}"


def _single_stream_seconds(sim: Simulator, services: Any, samples: int = 20) -> float:
    """Seconds to fetch one completed output and put it on S3, one at a time (the goal's download unit).

    Measured between runs (after a first batch run), on outputs of jobs that run completed.
    """
    import requests

    s3 = services.s3()
    with sim.state.lock:
        jobs = list(sim.state.jobs.values())[:samples]
    started = time.monotonic()
    for job in jobs:
        data = requests.get(sim.state.output_url(job, sim.base_url), timeout=30).content
        s3.pipe(f"{services.bucket}/probe/{job.id}.mp4", data)
    return (time.monotonic() - started) / max(1, len(jobs))


def run_scale(batch_sizes: list[int], per_item: int) -> dict[str, Any]:
    """Batch at each of ``batch_sizes`` (and a re-run), then per-item at ``per_item`` items, once."""
    from tests.deployment.harness.scale_deployment import ScaleDeployment, scale_services

    work = Path(tempfile.mkdtemp(prefix="chamelaion-bench-scale-"))
    config = SimulatorConfig(
        api_key=API_KEY, phases=SCALE_PHASES, output_size=SCALE_OUTPUT, max_concurrent_jobs=SCALE_K
    )
    runs: list[dict[str, Any]] = []
    begun = time.monotonic()
    with scale_services(work / "services") as services, Simulator(config) as sim:
        out = f"s3://{services.bucket}/bench"
        deployment = ScaleDeployment(
            work / "airflow",
            services=services,
            dags_folder=ROOT / "benchmarks" / "dags",
            output_dir=work / "process-output",
            parallelism=32,
            worker_concurrency=8,
            env={
                "AIRFLOW_CONN_CHAMELAION_DEFAULT": sim.connection_json(),
                "CHAMELAION_POLL_INTERVAL": str(SCALE_POLL),
                "CHAMELAION_OUTPUT_DIR": out,
                "BENCH_ITEMS": str(max(per_item, 1)),
                "PYTHONPATH": str(ROOT),
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(1024, per_item)),
            },
        )
        try:
            deployment.start()
            deployment.wait_until_healthy(timeout=240)
            dags = [dag for dag, _ in BATCH_DAGS] + (["bench_per_item"] if per_item else [])
            for dag_id in dags:
                deadline = time.monotonic() + 240
                while deployment.api_response("GET", f"/api/v2/dags/{dag_id}").status_code != 200:
                    assert time.monotonic() < deadline, f"{dag_id} never parsed"
                    time.sleep(1)
            # Warm-up, not measured: the first task a fresh deployment runs pays for cold caches (its Celery
            # worker's first fork, the first S3 client, the DAG's first parse on a worker), which no later
            # run does. One 10-item batch takes that cost out of the first measured run.
            warm_up = _write_catalogue(services, 10, "warm-up")
            print("[bench-scale] warm-up batch (10 items, not measured) ...", flush=True)
            assert trigger_and_wait(deployment, "bench_batch_file", {"catalogue": warm_up})[1] == "success"
            single = 0.0
            for items in batch_sizes:
                for dag_id, pattern in BATCH_DAGS:
                    catalogue = _write_catalogue(services, items, f"{dag_id}-{items}")
                    for attempt in ("first run", "re-run"):
                        print(f"[bench-scale] {pattern} {items} {attempt} ...", flush=True)
                        result = _scale_run(deployment, sim, dag_id, {"catalogue": catalogue})
                        result.update(pattern=pattern, items=items, attempt=attempt)
                        print(
                            f"[bench-scale] { ({k: v for k, v in result.items() if k != 'progress'}) }",
                            flush=True,
                        )
                        runs.append(result)
                        if not single:
                            single = _single_stream_seconds(sim, services)
            # Per-item: a first run and the re-run that checks reused jobs resume, not fail. At 1,000 items
            # a run takes most of an hour on two shared cores: BENCH_PER_ITEM_RERUN=0 skips the re-run.
            per_item_runs = (
                ("first run", "re-run")
                if os.environ.get("BENCH_PER_ITEM_RERUN", "1") != "0"
                else ("first run",)
            )
            for attempt in per_item_runs if per_item else ():
                print(f"[bench-scale] per-item {per_item} {attempt} ...", flush=True)
                result = _scale_run(deployment, sim, "bench_per_item")
                result.update(pattern="per-item", items=per_item, attempt=attempt)
                print(f"[bench-scale] { ({k: v for k, v in result.items() if k != 'progress'}) }", flush=True)
                runs.append(result)
        finally:
            deployment.stop()
    return {"runs": runs, "single_stream_s": single, "seconds": time.monotonic() - begun}


def plot_progress(runs: list[dict[str, Any]], path: Path = SCALE_PLOT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for run in runs:
        if run["attempt"] != "first run":
            continue
        xs = [t for t, _ in run["progress"]]
        ys = [n for _, n in run["progress"]]
        ax.plot(xs, ys, label=f"{run['pattern']}, {run['items']:,} items")
    ax.set_xlabel("seconds since the DAG run was triggered")
    ax.set_ylabel("items completed (output downloaded)")
    ax.set_title("Catalogue backfill on PostgreSQL + Celery (2 workers) + S3")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


#: The batch DAGs measured (``BENCH_BATCH_DAGS`` picks some): the batch and its download task, and the
#: batch that downloads in the task resuming from the wait (``download_to``).
BATCH_DAGS = [
    (dag, pattern)
    for dag, pattern in (
        ("bench_batch_file", "batch"),
        ("bench_batch_one_task", "batch, download_to"),
    )
    if dag in os.environ.get("BENCH_BATCH_DAGS", "bench_batch_file,bench_batch_one_task").split(",")
]

SCALE_TITLE = "Catalogue backfill: batch vs per-item on PostgreSQL + Celery (2 workers) + S3"


def scale_sizes() -> tuple[int, list[int]]:
    """Per-item items and batch sizes: ``BENCH_PER_ITEM`` (default 1000), ``BENCH_BATCH_SIZES`` (1000,10000)."""
    per_item = int(os.environ.get("BENCH_PER_ITEM", "1000"))
    sizes = [int(v) for v in os.environ.get("BENCH_BATCH_SIZES", "1000,10000").split(",") if v.strip()]
    return per_item, sizes


def run() -> Section:
    """The ``batch`` section of ``make bench``; also rewrites the scale part of results-batch.md."""
    per_item, sizes = scale_sizes()
    measured = run_scale(sizes, per_item)
    plot_progress(measured["runs"])
    lines, goals = scale_lines(measured), scale_goals(measured)
    write_scale_results(lines, goals)
    section = Section(SCALE_TITLE, lines=lines, goals=goals, seconds=measured["seconds"])
    return section


def write_scale_results(lines: list[str], goals: list[Goal]) -> None:
    body = [
        f"# {SCALE_TITLE}",
        "",
        *lines,
        "",
        *table(
            ["goal (issue 11)", "target", "measured", "verdict", "margin"],
            [[g.name, g.target, g.measured, g.verdict, g.margin] for g in goals],
        ),
        "",
    ]
    RESULTS.write_text("\n".join(body))


def main(argv: list[str]) -> int:
    """``python -m benchmarks.batch_deployment [PER_ITEM [BATCH_SIZE ...]]``."""
    if argv:
        os.environ["BENCH_PER_ITEM"] = argv[0]
    if argv[1:]:
        os.environ["BENCH_BATCH_SIZES"] = ",".join(argv[1:])
    run()
    print(f"[bench-scale] wrote {RESULTS} and {SCALE_PLOT}", flush=True)
    return 0


def scale_goals(measured: dict[str, Any]) -> list[Goal]:
    import math

    runs, single = measured["runs"], measured["single_stream_s"]
    goals: list[Goal] = []
    per_item = next((r for r in runs if r["pattern"] == "per-item"), None)
    for r in runs:
        if not r["pattern"].startswith("batch"):
            continue
        n = r["items"]
        cpu = round(sum(r["cpu_s"].values()), 1)
        if r["attempt"] == "first run":
            floor = math.ceil(n / SCALE_K) * JOB_SECONDS + n * single
            goals.append(
                Goal(
                    f"{r['pattern']} {n:,}: wall time",
                    f"<= 1.25 x (ceil(N/K) x {JOB_SECONDS:.0f} s + N x {single * 1000:.0f} ms) = {1.25 * floor:.0f} s",
                    f"{r['wall_s']} s",
                    r["wall_s"] <= 1.25 * floor,
                    f"{r['wall_s'] / floor:.2f} x the floor",
                )
            )
            goals.append(
                Goal(
                    f"{r['pattern']} {n:,}: task instances / trigger rows",
                    "<= 10 / <= 10",
                    f"{r['task_instances']} / {r['trigger_rows']}",
                    r["task_instances"] <= 10 and r["trigger_rows"] <= 10,
                )
            )
            if per_item is not None:
                per_cpu = sum(per_item["cpu_s"].values())
                scaled = per_cpu * n / per_item["items"]
                label = (
                    "measured"
                    if per_item["items"] == n
                    else f"**extrapolated** linearly from {per_item['items']:,} measured items"
                )
                goals.append(
                    Goal(
                        f"{r['pattern']} {n:,}: Airflow CPU s vs per-item",
                        f"<= 1/20 of per-item ({label}: {scaled:.0f} s)",
                        f"{cpu} s",
                        cpu * 20 <= scaled,
                        f"1/{scaled / max(cpu, 0.1):.0f}",
                    )
                )
        else:
            downloads = r["calls_by_kind"].get("download", 0)
            goals.append(
                Goal(
                    f"{r['pattern']} {n:,} re-run",
                    f"0 jobs, 0 downloads, <= N/40 = {n // 40} API calls",
                    f"{r['jobs_created']} jobs, {downloads} downloads, {r['api_calls']} calls",
                    r["jobs_created"] == 0 and downloads == 0 and r["api_calls"] <= n / 40,
                )
            )
    return goals


def _wait_cell(wait: dict[str, float] | None) -> str:
    if wait is None:
        return "no wait"
    return f"{wait['per_cycle']} ({wait['calls']:.0f} / {wait['seconds']:.0f} s)"


def scale_lines(measured: dict[str, Any]) -> list[str]:
    runs, single = measured["runs"], measured["single_stream_s"]
    rows = []
    for r in runs:
        cpu = r["cpu_s"]
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["calls_by_kind"].items()))
        rows.append(
            [
                r["pattern"],
                f"{r['items']:,}",
                r["attempt"],
                r["state"],
                r["wall_s"],
                f"{r['task_instances']} ({r['failed_tis']} failed)",
                r["trigger_rows"],
                r["xcom_rows"],
                r["jobs_created"],
                f"{r['api_calls']} ({kinds})",
                _wait_cell(r["wait"]),
                " / ".join(
                    f"{cpu.get(n, 0)}"
                    for n in ("scheduler", "triggerer", "api-server", "worker-1", "worker-2", "dag-processor")
                )
                + f" (sum {round(sum(cpu.values()), 1)})",
            ]
        )
    return [
        f"`python -m benchmarks batch` (or `python -m benchmarks.batch_deployment`) on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {measured['seconds']:.0f} s in all. Deployment "
        "(tests/deployment/harness/scale_deployment.py): PostgreSQL 15 metadata DB, CeleryExecutor with a Redis "
        "broker, two Celery workers (8 slots each, no shared local disk), API server, scheduler "
        "(parallelism 32), DAG processor and triggerer; catalogue, manifests and outputs on S3 (moto's "
        "server mode). Simulator, the same for every run: jobs 10 s (queued 2 s, running 8 s), account "
        f"concurrency K = {SCALE_K}, outputs 16 KiB; poll 5 s. One shared 2-core machine with other work "
        f"running. Single-stream download (fetch one output, put it on S3), measured: {single * 1000:.0f} ms.",
        "",
        *table(
            [
                "pattern",
                "items",
                "run",
                "state",
                "wall s",
                "task instances",
                "trigger rows",
                "XCom rows",
                "jobs created",
                "API calls",
                "waiting: calls per 5 s cycle (calls / seconds)",
                "CPU s scheduler / triggerer / api-server / worker-1 / worker-2 / dag-processor",
            ],
            rows,
        ),
        "",
        f"![items completed over time]({SCALE_PLOT.name})",
        "",
        "CPU seconds: each process tree's own plus its reaped children's (Celery's task processes are the "
        "workers'). Trigger rows: distinct ids sampled every second (a lower bound for the per-item "
        "pattern, whose triggers come and go). Waiting: the calls the run made while its jobs ran (the batch's "
        "listing pages from its last submission on, the per-item pattern's status GETs), per 5 s poll cycle.",
    ]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
