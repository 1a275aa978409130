"""``make demo``: the nightly localization DAG end to end, offline, against the local simulator.

1. starts the Chamelaion simulator on a free loopback port (a subprocess, as a real API would be);
2. prepares a throwaway Airflow home in ``.demo/`` and points ``chamelaion_default`` at the simulator;
3. runs ``airflow dags test chamelaion_nightly_localization`` (submit -> deferred wait -> download);
4. prints what each job did and where the outputs landed, then stops the simulator;
5. scans every file under ``.demo/`` for the API key, and the logs for a signed URL's query string.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from airflow_provider_chamelaion.simulator.process import SimulatorProcess

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
DAG_ID = "chamelaion_nightly_localization"
#: Lines of the DAG run worth showing live: what the provider did.
INTERESTING = re.compile(
    r"Submitted Chamelaion|Reusing|Chamelaion lip-sync request \S+ (completed|failed)|Downloaded output|"
    r"[Rr]equest \S+ is |Still waiting|Pausing task as DEFERRED|DagRun Finished"
)
#: A signed URL's query string (the simulator signs output URLs with ``expires=`` and ``sig=``).
SIGNED_QUERY = re.compile(rb"[?&](sig|expires)=")


def main() -> int:
    started = time.monotonic()
    shutil.rmtree(DEMO, ignore_errors=True)
    (DEMO / "airflow").mkdir(parents=True)
    outputs = DEMO / "outputs"
    api_key = f"demo-{secrets.token_hex(8)}"
    simulator = SimulatorProcess(
        ["--phases", "queued=2,running=3", "--output-size", str(2 * 1024 * 1024)],
        api_key=api_key,
        log=DEMO / "simulator.log",
    )
    print("==> Starting the Chamelaion simulator on a free loopback port", flush=True)
    with simulator:
        code, jobs = run_against(simulator, outputs)
    print(f"==> The simulator held {jobs['total']} jobs:")
    for job in jobs["data"]:
        print(f"    {job['reference_id']:<24} {job['status']:<10} {job['id']}")
    print(f"==> Outputs in {outputs}:")
    for path in sorted(outputs.glob("*")) if outputs.exists() else []:
        print(f"    {path.name:<28} {path.stat().st_size:>10,} bytes")
    leaks = scan_for_secret(api_key)
    if leaks:
        print(f"==> SECRET LEAK: the API key appears in {', '.join(leaks)}")
        code = code or 3
    else:
        print("==> Secret scan: the API key appears in no log, database row or output under .demo/")
    signed = logs_with_signed_urls()
    if signed:
        print(f"==> SIGNED URL LEAK: an output URL's signature appears in {', '.join(signed)}")
        code = code or 4
    else:
        print("==> No log under .demo/ holds a signed output URL's query (XCom keeps the whole URL)")
    verdict = "succeeded" if code == 0 else f"FAILED (exit {code})"
    print(f"==> Demo {verdict} in {time.monotonic() - started:.0f} s; simulator stopped.")
    return code


def run_against(simulator: SimulatorProcess, outputs: Path) -> tuple[int, dict]:
    """``airflow dags test`` of the nightly DAG, the connection pointing at ``simulator``."""
    print(f"    at {simulator.base_url}", flush=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(DEMO / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_CHAMELAION_DEFAULT": simulator.connection_json(),
        "CHAMELAION_OUTPUT_DIR": str(outputs),
        "CHAMELAION_POLL_INTERVAL": "1",
    }
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    print("==> Preparing a throwaway Airflow home in .demo/airflow (airflow db migrate)", flush=True)
    with open(DEMO / "db-migrate.log", "wb") as log:
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, stdout=log, stderr=log
        )
    print(f"==> airflow dags test {DAG_ID}  (full log: .demo/dags-test.log)", flush=True)
    return run_dag(env), simulator.call("GET", "/_simulator/jobs")


def run_dag(env: dict[str, str]) -> int:
    with open(DEMO / "dags-test.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "dags", "test", DAG_ID],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if INTERESTING.search(line):
                print("    " + summarize(line), flush=True)
        return process.wait()


def summarize(line: str) -> str:
    """Keep the event text of a structured log line, drop the timestamps and logger names."""
    match = re.search(r"\[(?:info|warning|error)\s*\]\s+(.*?)\s+\[[\w.]+\]", line)
    text = (match.group(1) if match else line).strip()
    if "DEFERRED" in text:
        task = re.search(r"task_id=(\S+)", line)
        text = (
            f"{task.group(1) if task else 'task'}: deferred to the triggerer (no worker slot while waiting)"
        )
    elif text.startswith("Request "):
        text = f"  triggerer: {text}"
    elif text.startswith("DagRun Finished"):  # Airflow's line: every date of the run, twice over
        fields = dict(re.findall(r"(\w+)=([^,]+)", text))
        text = f"DAG run {fields.get('run_id')} finished: {fields.get('state')} in {fields.get('run_duration')} s"
    # Whole ids and figures: shorten paths, never cut the line.
    return text.replace(f"{ROOT}/", "")


def scan_for_secret(secret: str) -> list[str]:
    """Every file under .demo/ (logs, the SQLite metadata DB with XComs, trigger rows and rendered
    fields, the outputs) that contains ``secret``; the demo's own printed lines go to dags-test.log too."""
    needle = secret.encode()
    return [
        str(path.relative_to(ROOT))
        for path in DEMO.rglob("*")
        if path.is_file() and needle in path.read_bytes()
    ]


def logs_with_signed_urls() -> list[str]:
    """Every log under .demo/ (the DAG run's output and Airflow's log files; not the metadata DB, whose
    XComs keep the whole URL for downstream tasks) holding a signed URL's query string."""
    logs = [*DEMO.glob("*.log"), *(DEMO / "airflow" / "logs").rglob("*")]
    return [
        str(path.relative_to(ROOT))
        for path in logs
        if path.is_file() and SIGNED_QUERY.search(path.read_bytes())
    ]


if __name__ == "__main__":
    sys.exit(main())
