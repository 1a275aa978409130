"""What every benchmark shares: the simulator subprocess, child processes, measurements, the report."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_chamelaion.simulator import process as simulator_process

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
RESULTS = ROOT / "benchmarks" / "results.md"
PYCACHE = WORK / "pycache"
PYTHON = sys.executable
KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
MB = 1_000_000
API_KEY = "bench-key"
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: glibc settings for the simulator process only. uvicorn/httptools allocate a fresh ~256 KiB ``bytes``
#: per received chunk; with glibc's defaults each one is mmap'ed/trimmed and page-faulted afresh, and
#: the server spent ~1.5 s of kernel time per GiB uploaded (curl capped at ~400 MB/s by the server).
#: Keeping freed memory in the heap removes that; every client talks to the same tuned server.
SIMULATOR_MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(512 * MIB),
    "MALLOC_TRIM_THRESHOLD_": str(512 * MIB),
    "MALLOC_TOP_PAD_": str(64 * MIB),
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a measured child: a throwaway Airflow home, nothing inherited that matters."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "MALLOC_")) and key != "PYTHONDONTWRITEBYTECODE"
    }
    home = WORK / "airflow-home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
            # Byte-code is cached (as in any deployment) but under benchmarks/.work, not in the venv or
            # the source tree: with PYTHONDONTWRITEBYTECODE every child would compile ~1,400 modules.
            "PYTHONPYCACHEPREFIX": str(PYCACHE),
        }
    )
    env.update(extra)
    return env


# -- the simulator --------------------------------------------------------------------------------


class SimulatorProcess(simulator_process.SimulatorProcess):
    """The simulator in a subprocess (the package's harness), as every benchmark runs it: the malloc
    tuning above, its log under ``benchmarks/.work``, and its CPU time readable."""

    def __init__(
        self,
        *,
        phases: str = "queued=1,running=3600",
        output_size: int = 256 * KIB,
        tuned_malloc: bool = True,
        name: str = "simulator",
    ) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        super().__init__(
            ["--phases", phases, "--output-size", str(output_size)],
            api_key=API_KEY,
            log=WORK / f"{name}.log",
            env=child_env(**(SIMULATOR_MALLOC_ENV if tuned_malloc else {})),
            cwd=ROOT,
        )

    def cpu_seconds(self) -> float:
        """User + system CPU the simulator process has used so far."""
        with open(f"/proc/{self.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def create_job(self) -> str:
        body = {
            "inputs": [
                {"type": "video", "url": "https://media.example.com/episode.mp4"},
                {"type": "audio", "url": "https://media.example.com/dub.wav"},
            ]
        }
        return str(self.call("POST", "/api/v1/lipsync/generate", body)["request_id"])


# -- child processes ------------------------------------------------------------------------------


def run_child(
    module: str,
    args: Sequence[str],
    *,
    env: dict[str, str],
    timeout: float = 600.0,
    stderr_path: Path | None = None,
) -> dict[str, Any]:
    """Run ``python -m <module> --child <args>`` in a fresh interpreter; return the JSON it prints last."""
    command = [PYTHON, "-m", module, "--child", *args]
    with contextlib.ExitStack() as stack:
        stderr: Any = subprocess.PIPE
        if stderr_path is not None:
            stderr = stack.enter_context(stderr_path.open("wb"))
        result = subprocess.run(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, timeout=timeout, check=False
        )
    stdout = result.stdout.decode(errors="replace")
    err_text = result.stderr.decode(errors="replace") if result.stderr else ""
    if stderr_path is not None:
        err_text = stderr_path.read_text(errors="replace")[-3000:]
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{stdout[-3000:]}\n{err_text}")
    lines = stdout.splitlines()
    for line in reversed(lines):
        if line.startswith("{"):
            report: dict[str, Any] = json.loads(line)
            report["stdout_other_lines"] = sum(1 for other in lines if not other.startswith("{"))
            return report
    raise RuntimeError(f"{' '.join(command)} printed no report:\n{stdout[-3000:]}\n{err_text}")


def emit(report: dict[str, Any]) -> None:
    """A child's report: one JSON line on stdout."""
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


@dataclass
class ProcessRun:
    returncode: int
    stdout: str
    wall: float
    user: float
    system: float
    maxrss_kib: int


def run_tool(command: Sequence[str], *, timeout: float = 600.0) -> ProcessRun:
    """Run an external tool (curl); its own CPU time and peak RSS come from ``wait4``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({proc.returncode}): {stderr[-2000:]}")
    return ProcessRun(proc.returncode, stdout, wall, usage.ru_utime, usage.ru_stime, int(usage.ru_maxrss))


# -- measurements inside a child -----------------------------------------------------------------


def current_rss_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_kib() -> int:
    """``ru_maxrss``: the process's peak RSS since it started (KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def reset_high_water_mark() -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``; ``ru_maxrss`` cannot be reset) if allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def high_water_mark_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


class PeakRss:
    """Peak RSS growth of one operation: current RSS right before it vs the peak after it.

    The peak is ``VmHWM`` reset right before the operation when the kernel allows it (exactly this
    operation's peak); ``ru_maxrss`` (which also holds the start-up peak) is reported alongside.
    """

    def __init__(self) -> None:
        self.before_kib = 0
        self.reset = False

    def start(self) -> None:
        self.reset = reset_high_water_mark()
        self.before_kib = current_rss_kib()

    def report(self) -> dict[str, object]:
        maxrss = peak_rss_kib()
        peak = high_water_mark_kib() if self.reset else maxrss
        return {
            "rss_before_kib": self.before_kib,
            "peak_kib": peak,
            "growth_kib": peak - self.before_kib,
            "ru_maxrss_kib": maxrss,
            "ru_maxrss_growth_kib": maxrss - self.before_kib,
            "peak_source": "VmHWM (reset before)" if self.reset else "ru_maxrss",
        }


def cpu_times() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


# -- the report -----------------------------------------------------------------------------------


@dataclass
class Goal:
    name: str
    target: str
    measured: str
    met: bool | None
    margin: str = ""

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "reported"
        return "**met**" if self.met else "**missed**"


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    seconds: float = 0.0

    def markdown(self) -> list[str]:
        out = [f"## {self.title}", "", *self.lines, ""]
        if self.goals:
            out += table(
                ["goal", "target", "measured", "verdict", "margin"],
                [[g.name, g.target, g.measured, g.verdict, g.margin] for g in self.goals],
            )
            out.append("")
        out.append(f"_This benchmark took {self.seconds:.0f} s._")
        out.append("")
        return out


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def transfer_table(rows: Sequence[Sequence[object]]) -> list[str]:
    """How peak RSS growth is measured, then the per-client table of a transfer benchmark."""
    return [
        "Peak RSS growth (Python clients, each in a fresh interpreter, worst run): the kernel's peak-RSS "
        "counter `VmHWM`, reset through `/proc/self/clear_refs` right before the transfer, minus the RSS "
        "right before it. `ru_maxrss` cannot be reset and also holds the start-up peak, so its growth is "
        "shown alongside (0 or below: the transfer never exceeded the start-up peak). curl: peak RSS from "
        "`wait4`.",
        "",
        *table(
            [
                "client",
                "MB/s (median)",
                "MB/s (each run)",
                "client CPU s",
                "server CPU s",
                "peak RSS MiB",
                "peak RSS growth MiB",
                "`ru_maxrss` - RSS before, MiB",
            ],
            rows,
        ),
    ]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def version_of(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_total_gib() -> float:
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    return 0.0


def memory_available_kib() -> int:
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def curl_version() -> str:
    if shutil.which("curl") is None:
        return "not installed"
    out = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=False).stdout
    return out.split("\n", 1)[0].split(" (", 1)[0]


def machine_lines(load: Sequence[float] = ()) -> list[str]:
    """The Machine table; ``load``: the load average when the run began (now, if not given)."""
    load = load or os.getloadavg()
    rows = [
        ["CPU", f"{cpu_model()} ({os.cpu_count()} cores)"],
        ["memory", f"{memory_total_gib():.1f} GiB"],
        ["OS", f"{platform.system()} {platform.release()}"],
        ["Python", platform.python_version()],
        ["Airflow", version_of("apache-airflow")],
        ["httpx / httpcore", f"{version_of('httpx')} / {version_of('httpcore')}"],
        ["requests / urllib3", f"{version_of('requests')} / {version_of('urllib3')}"],
        ["aiohttp", version_of("aiohttp")],
        ["apache-airflow-providers-http", version_of("apache-airflow-providers-http")],
        [
            "simulator stack",
            f"uvicorn {version_of('uvicorn')}, uvloop {version_of('uvloop')}, httptools "
            f"{version_of('httptools')}, python-multipart {version_of('python-multipart')}",
        ],
        ["curl", curl_version()],
        ["load average at start", f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"],
    ]
    return table(["", ""], rows)


@contextlib.contextmanager
def work_dir(name: str) -> Iterator[Path]:
    """A scratch directory under ``benchmarks/.work`` (same disk as the project), removed afterwards."""
    path = WORK / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def warm_page_cache(path: Path) -> None:
    """Read a file once so every client then reads it from the page cache (a sparse file's first read
    allocates its zero pages: several seconds of kernel time that only the first reader would pay)."""
    with path.open("rb", buffering=0) as handle:
        while handle.read(8 * MIB):
            pass


def loadavg() -> str:
    return f"{os.getloadavg()[0]:.2f}"
