"""``python -m airflow_provider_chamelaion.simulator``: run the simulator in the foreground."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from airflow_provider_chamelaion.simulator.server import Simulator
from airflow_provider_chamelaion.simulator.state import Fault, SimulatorConfig, parse_clock_offset


def _phases(text: str) -> tuple[tuple[str, float], ...]:
    try:
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        return tuple((name.strip(), float(seconds)) for name, seconds in pairs)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected NAME=SECONDS[,NAME=SECONDS...], e.g. queued=1,running=2"
        ) from None


def _fault(text: str) -> Fault:
    """``KIND[:STATUS][,KEY=VALUE...][@PATH_REGEX][xTIMES]``.

    Examples: ``status:503x3``, ``status:429,retry_after=2@/requests/x2``, ``slow,delay=5``,
    ``drop_after@/generate``, ``truncate,cut_at=1000@/outputs/``. Keys: retry_after, delay, cut_at, method.
    """
    times = 1
    head, at, path = text.partition("@")
    tail = path if at else head
    if "x" in tail and tail.rsplit("x", 1)[1].isdigit():
        tail, _, count = tail.rpartition("x")
        times = int(count)
        if at:
            path = tail
        else:
            head = tail
    spec, *options = head.split(",")
    kind, _, status = spec.partition(":")
    fields: dict[str, object] = {}
    try:
        for option in options:
            key, _, value = option.partition("=")
            if key == "retry_after" or key == "method":
                fields[key] = value
            elif key in ("delay", "cut_at"):
                fields[key] = float(value) if key == "delay" else int(value)
            else:
                raise ValueError(f"unknown fault option {key!r}")
        return Fault(kind=kind, status=int(status or 503), path=path or None, times=times, **fields)  # type: ignore[arg-type]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _clock_offset(text: str) -> float:
    try:
        return parse_clock_offset(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_chamelaion.simulator", description=__doc__
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)"
    )
    parser.add_argument("--port", type=int, default=8089, help="port to listen on (default 8089)")
    parser.add_argument("--api-key", default=defaults.api_key, help="the key clients must send (x-api-key)")
    parser.add_argument(
        "--phases",
        type=_phases,
        default=defaults.phases,
        help="non-terminal statuses and their durations in seconds (default queued=0.5,running=1)",
    )
    parser.add_argument(
        "--failure-rate", type=float, default=defaults.failure_rate, help="fraction of jobs that fail"
    )
    parser.add_argument("--output-size", type=int, default=defaults.output_size, help="bytes of each output")
    parser.add_argument(
        "--output-url-ttl",
        type=float,
        default=defaults.output_url_ttl,
        help=f"seconds a signed output_url stays valid (default {defaults.output_url_ttl:g})",
    )
    parser.add_argument(
        "--output-base-url", default=None, help="origin output URLs point at (default: the API's)"
    )
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="fraction of calls given a random transient fault"
    )
    parser.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        help="script a fault: KIND[:STATUS][,KEY=VALUE...][@PATH_REGEX][xTIMES], e.g. status:503x3, status:429,retry_after=2, slow,delay=5 (repeatable)",
    )
    parser.add_argument(
        "--max-page-size",
        type=int,
        default=defaults.max_page_size,
        help="the list call never returns more than this many requests per page (default 100)",
    )
    parser.add_argument(
        "--max-concurrent-jobs",
        type=int,
        default=None,
        help="account concurrency limit: jobs processed at once; the rest stay queued (default: no limit)",
    )
    parser.add_argument(
        "--post-rate-limit",
        type=float,
        default=None,
        help="POSTs accepted per second; above it 429 with Retry-After (default: no limit)",
    )
    parser.add_argument(
        "--empty-output-rate",
        type=float,
        default=defaults.empty_output_rate,
        help="fraction of jobs that complete with an empty (0-byte) output (default 0)",
    )
    parser.add_argument(
        "--history-size",
        type=int,
        default=0,
        help="completed requests the account already holds at start (realistic listings)",
    )
    parser.add_argument(
        "--lost-answer-rate",
        type=float,
        default=0.0,
        help="fraction of POSTs the server acts on and then does not answer (the connection drops)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the random failures and faults, for repeatable runs"
    )
    parser.add_argument(
        "--clock-offset",
        type=_clock_offset,
        default=0.0,
        help="shift every time the API reports (created_at, started_at, finished_at), e.g. -8h, +30d, -1y",
    )
    return parser.parse_args(_joined_clock_offset(sys.argv[1:] if argv is None else argv))


def _joined_clock_offset(argv: Sequence[str]) -> list[str]:
    """``--clock-offset -8h`` as ``--clock-offset=-8h``: argparse would take ``-8h`` for an option."""
    joined: list[str] = []
    pending = False
    for arg in argv:
        if pending:
            joined[-1] = f"--clock-offset={arg}"
            pending = False
        else:
            joined.append(arg)
            pending = arg == "--clock-offset"
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = SimulatorConfig(
        api_key=args.api_key,
        phases=args.phases,
        failure_rate=args.failure_rate,
        output_size=args.output_size,
        output_url_ttl=args.output_url_ttl,
        output_base_url=args.output_base_url,
        fault_rate=args.fault_rate,
        seed=args.seed,
        max_page_size=args.max_page_size,
        max_concurrent_jobs=args.max_concurrent_jobs,
        post_rate_limit=args.post_rate_limit,
        history_size=args.history_size,
        lost_answer_rate=args.lost_answer_rate,
        empty_output_rate=args.empty_output_rate,
        clock_offset=args.clock_offset,
    )
    simulator = Simulator(config, host=args.host, port=args.port)
    for fault in args.fault:
        simulator.state.add_fault(fault)
    print(f"Chamelaion simulator: base URL http://{args.host}:{args.port}/api", flush=True)
    simulator.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
