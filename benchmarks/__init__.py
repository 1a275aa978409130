"""Performance benchmarks of the provider against the local simulator (``make bench``).

Each benchmark module has ``run(ctx) -> Section`` (the parent side: starts the simulator subprocess,
runs the measured clients in fresh subprocesses, compares them) and, where it needs one, a child entry
point run as ``python -m benchmarks.<module> --child ...``. ``python -m benchmarks`` runs them all and
writes ``benchmarks/results.md``.
"""
