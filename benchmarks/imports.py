"""Import cost of the operator and sensor modules (``python -X importtime``) vs ``import airflow.sdk``.

Each variant runs ``RUNS`` times in fresh interpreters (alternating, after one unmeasured warm-up that
fills the byte-code cache); the figure per run is the sum of the cumulative times of the top-level
imports in the ``-X importtime`` report, and the median per variant is compared. Because
``import airflow.sdk`` alone varies by far more than the provider adds on a shared machine, the
provider's own top-level imports (their cumulative time inside the same report) are also summed: that is
exactly what importing the two modules costs on top of ``airflow.sdk``.

Also checked in fresh interpreters: which modules the two imports add to ``sys.modules`` (the hook and
its HTTP stack must not be among them), and that loading the provider info - directly and through the
``apache_airflow_provider`` entry point, as Airflow's provider discovery does - imports no hook code.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import defaultdict
from typing import Any

from benchmarks.common import PYTHON, ROOT, Goal, Section, child_env, loadavg, log, median, table

RUNS = 5
GOAL_MS = 50.0
PROVIDER = "airflow_provider_chamelaion"
HOOK_MODULE = f"{PROVIDER}.hooks.chamelaion"
MODULES = f"{PROVIDER}.operators.lipsync, {PROVIDER}.sensors.lipsync"
VARIANTS = {
    "airflow.sdk": "import airflow.sdk",
    "airflow.sdk + operator + sensor": f"import airflow.sdk; import {MODULES}",
}
#: Third-party packages worth naming when they are (or are not) imported.
WATCHED = (
    "requests",
    "urllib3",
    "httpx",
    "httpcore",
    "tenacity",
    "aiohttp",
    "fastapi",
    "uvicorn",
    "python_multipart",
    "pendulum",
)

MODULES_PROBE = f"""
import json, sys
import airflow.sdk
before = set(sys.modules)
import {MODULES}
added = sorted(set(sys.modules) - before)
watched = {WATCHED!r}
print(json.dumps({{
    "added": added,
    "watched_after_sdk": [m for m in watched if m in before],
    "watched_added": [m for m in watched if m in added],
    "hook_imported": {HOOK_MODULE!r} in sys.modules,
}}))
"""

PROVIDER_INFO_PROBE = f"""
import json, sys
from importlib.metadata import entry_points
from airflow_provider_chamelaion.get_provider_info import get_provider_info
info = get_provider_info()
direct = sorted(m for m in sys.modules if m.startswith({PROVIDER!r}))
hook_direct = {HOOK_MODULE!r} in sys.modules
points = [p for p in entry_points(group="apache_airflow_provider") if p.value.startswith({PROVIDER!r})]
via_entry_point = points[0].load()() if points else None
print(json.dumps({{
    "package": info["package-name"],
    "modules_direct": direct,
    "hook_imported_direct": hook_direct,
    "entry_point": points[0].value if points else None,
    "entry_point_same_info": via_entry_point == info,
    "modules_after_entry_point": sorted(m for m in sys.modules if m.startswith({PROVIDER!r})),
    "hook_imported": {HOOK_MODULE!r} in sys.modules,
    "http_stack_imported": [m for m in ("requests", "aiohttp", "tenacity") if m in sys.modules],
}}))
"""

TRIGGER_PROBE = f"""
import json, sys
import airflow_provider_chamelaion.triggers.lipsync
print(json.dumps({{"hook_imported": {HOOK_MODULE!r} in sys.modules}}))
"""


def parse_importtime(stderr: str) -> tuple[float, dict[str, float], dict[str, float]]:
    """(sum of top-level cumulative us, top-level cumulative per module, self us per module)."""
    top: dict[str, float] = {}
    own: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.split(":", 1)[1].split("|")
        module = name[1:]
        own[module.strip()] = float(self_us)
        if not module.startswith(" "):
            top[module] = float(cumulative_us)
    return sum(top.values()), top, own


def _python(code: str, *, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    command = [PYTHON, *(["-X", "importtime"] if importtime else []), "-c", code]
    result = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{result.stderr[-3000:]}")
    return result


def _json(code: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(_python(code).stdout.strip().splitlines()[-1])
    return out


def run() -> Section:
    started = time.monotonic()
    section = Section("Import time: the operator and sensor modules vs `import airflow.sdk`")
    load = [loadavg()]
    totals: dict[str, list[float]] = defaultdict(list)
    walls: dict[str, list[float]] = defaultdict(list)
    provider_ms: list[float] = []
    for code in VARIANTS.values():
        _python(code, importtime=True)  # warm-up: byte-code cache
    for number in range(RUNS):
        names = list(VARIANTS) if number % 2 == 0 else list(reversed(VARIANTS))
        for name in names:
            begun = time.perf_counter()
            result = _python(VARIANTS[name], importtime=True)
            walls[name].append(time.perf_counter() - begun)
            total, top, _own = parse_importtime(result.stderr)
            totals[name].append(total / 1000)
            if name != "airflow.sdk":
                provider_ms.append(
                    sum(us for module, us in top.items() if module.startswith(PROVIDER)) / 1000
                )
    log(f"imports: {RUNS} runs per variant done")
    probe = _json(MODULES_PROBE)
    info = _json(PROVIDER_INFO_PROBE)
    trigger = _json(TRIGGER_PROBE)
    load.append(loadavg())
    section.seconds = time.monotonic() - started

    base, with_modules = (median(totals[name]) for name in VARIANTS)
    extra_total = with_modules - base
    extra_direct = median(provider_ms)
    rows = [
        [
            f"`{VARIANTS[name]}`",
            f"**{median(totals[name]):.0f}**",
            ", ".join(f"{v:.0f}" for v in totals[name]),
            f"{median(walls[name]) * 1000:.0f}",
        ]
        for name in VARIANTS
    ]
    added = probe["added"]
    provider_added = [m for m in added if m.startswith(PROVIDER)]
    other_added = [m for m in added if not m.startswith(PROVIDER)]
    section.lines += [
        f"{RUNS} fresh interpreters per variant, alternating, after one warm-up each (byte-code cached under "
        f"`benchmarks/.work`). Load average (1 min) before / after: {' / '.join(load)}.",
        "",
        *table(
            [
                "command (`python -X importtime -c ...`)",
                "top-level imports, cumulative ms (median)",
                "each run",
                "process wall ms (median)",
            ],
            rows,
        ),
        "",
        f"* Extra, difference of the medians: **{extra_total:+.0f} ms** (the runs of `import airflow.sdk` "
        f"alone spread over {min(totals['airflow.sdk']):.0f}-{max(totals['airflow.sdk']):.0f} ms, so "
        "this difference is mostly noise).",
        f"* Extra, the provider's own top-level imports in the same reports (median): "
        f"**{extra_direct:.1f} ms** (each run: {', '.join(f'{v:.1f}' for v in provider_ms)}).",
        f"* Modules the two imports add after `airflow.sdk`: {len(added)}; provider modules: "
        f"{', '.join(f'`{m}`' for m in provider_added) or 'none'}; others: "
        f"{', '.join(f'`{m}`' for m in other_added) or 'none'}.",
        f"* Watched third-party packages added by the two imports: "
        f"{', '.join(f'`{m}`' for m in probe['watched_added']) or '**none**'}. Already loaded by "
        f"`import airflow.sdk` itself: {', '.join(f'`{m}`' for m in probe['watched_after_sdk']) or 'none'} "
        "(so the operator imports cannot be charged for them).",
        f"* `{HOOK_MODULE}` imported by the operator/sensor imports: **{probe['hook_imported']}**; by "
        f"importing the trigger module: **{trigger['hook_imported']}**.",
        f"* `get_provider_info()` (direct import): provider modules loaded "
        f"{', '.join(f'`{m}`' for m in info['modules_direct'])}; hook imported: "
        f"**{info['hook_imported_direct']}**. Through the entry point `{info['entry_point']}` (as provider "
        f"discovery loads it; same info: {info['entry_point_same_info']}): hook imported: "
        f"**{info['hook_imported']}**; HTTP stack imported: {info['http_stack_imported'] or 'none'}.",
        "",
    ]
    no_hook = not (info["hook_imported"] or info["hook_imported_direct"])
    section.goals += [
        Goal(
            "extra import time of operator + sensor",
            f"< {GOAL_MS:g} ms",
            f"{extra_direct:.1f} ms own (difference of medians {extra_total:+.0f} ms)",
            extra_direct < GOAL_MS,
            f"{GOAL_MS - extra_direct:+.1f} ms",
        ),
        Goal(
            "reading the provider info imports no hook code",
            "hook module not in `sys.modules`",
            "not imported" if no_hook else "imported",
            no_hook,
        ),
        Goal(
            "operator/sensor imports do not need the hook",
            "hook module not in `sys.modules`",
            "not imported" if not probe["hook_imported"] else "imported",
            not probe["hook_imported"],
        ),
    ]
    return section
