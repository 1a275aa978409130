"""An S3-compatible server in the test process (moto's server mode), with a log of the requests it served.

Tests that use it skip where moto or s3fs is not installed (the compatibility legs are plain installs).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

_REQUEST_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/')


def aws_env(endpoint: str) -> dict[str, str]:
    """What boto3, s3fs and Airflow's ObjectStoragePath need to reach a local S3 server at ``endpoint``."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }


def filesystem(endpoint: str) -> Any:
    """An ``s3fs`` filesystem on the local S3 server, for tests to look at a bucket (no listing cache)."""
    import s3fs

    return s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint, use_listings_cache=False)


@dataclass
class S3Server:
    """The running server: ``requests`` holds (method, path) of every request served, in order."""

    endpoint: str
    requests: list[tuple[str, str]] = field(default_factory=list)

    def new_bucket(self) -> str:
        """A fresh empty bucket, so tests do not see each other's objects."""
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.fs().mkdir(name)
        return name

    def fs(self) -> Any:
        return filesystem(self.endpoint)

    def served(self, method: str, bucket: str) -> list[str]:
        """Paths of the ``method`` requests made on ``bucket`` (including listings, ``GET /bucket?...``)."""
        return [path for verb, path in self.requests if verb == method and path.startswith(f"/{bucket}")]


class _RequestLog(logging.Handler):
    def __init__(self, server: S3Server) -> None:
        super().__init__(logging.INFO)
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        if match := _REQUEST_LINE.search(record.getMessage()):
            self.server.requests.append((match.group(1), match.group(2)))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port; AWS_* variables point boto, s3fs and Airflow at it."""
    why = (
        "needs moto's S3 server and s3fs (the deployment dependency group; the compatibility legs have them)"
    )
    pytest.importorskip("s3fs", reason=why)
    moto_server = pytest.importorskip("moto.server", reason=why)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = S3Server(f"http://{host}:{port}")
    werkzeug = logging.getLogger("werkzeug")  # the server's request lines
    handler = _RequestLog(s3)
    werkzeug.addHandler(handler)
    werkzeug.setLevel(logging.INFO)
    with pytest.MonkeyPatch.context() as env:
        for name, value in aws_env(s3.endpoint).items():
            env.setenv(name, value)
        try:
            yield s3
        finally:
            werkzeug.removeHandler(handler)
            server.stop()
