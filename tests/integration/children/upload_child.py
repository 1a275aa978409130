"""Run in a fresh interpreter by tests/integration/test_upload_streaming_memory.py: upload two files,
report memory.

Usage: ``python upload_child.py {hook|requests-files} VIDEO AUDIO``. The connection comes from
``AIRFLOW_CONN_CHAMELAION_DEFAULT`` in both modes. Everything the upload needs is imported and warmed
up (a small upload of AUDIO as both parts) before the baseline is taken, so the reported growth is the
big upload's own. Answers (``tests.harness.processes``) with one line on stdout::

    ANSWER {"mode": ..., "request_id": ..., "warmup_request_id": ..., "before_kib": ..., "after_kib": ..., "growth_kib": ...}

``before_kib``/``after_kib`` are the process's peak RSS in KiB: ``VmHWM`` in ``/proc/self/status``, this
process's own high-water mark. Not ``ru_maxrss``: Linux carries it over from the parent across fork and
exec, so a child of a pytest process grown to 600 MiB starts at 600 MiB and its own growth is hidden
(measured: the control then "grew" 283 MiB, however much it buffered).
"""

from __future__ import annotations

import json
import os
import resource
import sys
from collections.abc import Callable


def peak_rss_kib() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])  # "VmHWM:   13568 kB"
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # no /proc: KiB on Linux


def hook_uploader() -> Callable[[str, str], str]:
    from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

    hook = ChamelaionHook(max_attempts=1)
    return hook.generate_with_media


def requests_files_uploader() -> Callable[[str, str], str]:
    """requests' own ``files=``: builds the whole multipart body in memory (the control)."""
    import requests

    conn = json.loads(os.environ["AIRFLOW_CONN_CHAMELAION_DEFAULT"])
    url = conn["host"].rstrip("/") + "/v1/lipsync/generate-with-media"
    session = requests.Session()

    def upload(video: str, audio: str) -> str:
        with open(video, "rb") as video_file, open(audio, "rb") as audio_file:
            response = session.post(
                url,
                files={
                    "video": ("video.mp4", video_file, "video/mp4"),
                    "audio": ("audio.wav", audio_file, "audio/wav"),
                },
                headers={"x-api-key": conn["password"]},
                timeout=(10, 300),
            )
        response.raise_for_status()
        request_id: str = response.json()["request_id"]
        return request_id

    return upload


def main(argv: list[str]) -> int:
    mode, video, audio = argv
    upload = {"hook": hook_uploader, "requests-files": requests_files_uploader}[mode]()
    warmup_request_id = upload(audio, audio)
    before = peak_rss_kib()
    request_id = upload(video, audio)
    after = peak_rss_kib()
    report = {
        "mode": mode,
        "request_id": request_id,
        "warmup_request_id": warmup_request_id,
        "before_kib": before,
        "after_kib": after,
        "growth_kib": after - before,
    }
    sys.stdout.write("ANSWER " + json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
