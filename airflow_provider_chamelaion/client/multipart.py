"""A streaming ``multipart/form-data`` body with a known length.

Why not ``requests``' own ``files=``: it builds the whole body in memory (a 2 GB video needs 2 GB of
RAM). Why not requests-toolbelt's ``MultipartEncoder``: it needs ``fileno()`` or ``len()`` to size a file
(object-storage files have neither) and copies every byte through its own small buffer. The sizes are
already known here (validation measured them), so the body is a plain iterator of the part headers and
1 MiB file chunks, with ``__len__`` so requests sends a ``Content-Length`` instead of chunked encoding.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from airflow_provider_chamelaion.client.media import MediaInfo
from airflow_provider_chamelaion.exceptions import ChamelaionConfigError

CHUNK_SIZE = 1 << 20
#: The longest boundary RFC 2046 allows. The server finds the end of each file by searching the body
#: for it, and substring search skips ahead by about the needle's length on every mismatch: the
#: longer the boundary, the fewer steps per byte on the receiving side. With a 32-character
#: boundary that search made the simulator's side of a large upload the bottleneck, and slower than
#: with curl's 40-character one (``benchmarks/results.md``).
BOUNDARY_CHARS = 70


@dataclass(frozen=True)
class FilePart:
    field: str
    info: MediaInfo
    fileobj: IO[bytes]


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartBody:
    """Iterate to get the body; ``len()`` is its exact size in bytes."""

    def __init__(
        self,
        parts: Sequence[FilePart],
        *,
        chunk_size: int = CHUNK_SIZE,
        on_chunk: Callable[[int], None] | None = None,
    ) -> None:
        self._on_chunk = on_chunk  # told the size of every file chunk sent (progress lines)
        self.boundary = secrets.token_hex(BOUNDARY_CHARS // 2)
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self._parts = list(parts)
        self._chunk_size = chunk_size
        self._headers = [
            (
                f"--{self.boundary}\r\n"
                f'Content-Disposition: form-data; name="{_quote(part.field)}"; '
                f'filename="{_quote(part.info.filename)}"\r\n'
                f"Content-Type: {part.info.content_type}\r\n\r\n"
            ).encode()
            for part in self._parts
        ]
        self._closing = f"--{self.boundary}--\r\n".encode()
        self._length = sum(
            len(header) + part.info.size + 2 for header, part in zip(self._headers, self._parts, strict=True)
        ) + len(self._closing)

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        for header, part in zip(self._headers, self._parts, strict=True):
            yield header
            remaining = part.info.size
            while remaining:
                chunk = part.fileobj.read(min(self._chunk_size, remaining))
                if not chunk:
                    raise ChamelaionConfigError(
                        f"{part.field} {part.info.filename!r} shrank while it was being uploaded "
                        f"({remaining} of {part.info.size} bytes missing)"
                    )
                remaining -= len(chunk)
                yield chunk
                if self._on_chunk is not None:
                    self._on_chunk(len(chunk))
            yield b"\r\n"
        yield self._closing
