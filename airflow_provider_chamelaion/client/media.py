"""Media the hook uploads (sources) and writes (destinations): local paths, object storage, file objects.

A *source* is a local path (``str`` or ``os.PathLike``), an object-storage path (Airflow's
``ObjectStoragePath`` or a URI string such as ``s3://bucket/key`` or ``file:///data/x.mp4``) or an open,
seekable binary file object. A *destination* is a local or object-storage file path (or an existing
directory, in which case the request's own file name is used).

Both are checked before any HTTP call, so a typo fails the task at once and costs nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import mimetypes
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union, cast

from airflow_provider_chamelaion.exceptions import ChamelaionConfigError

if TYPE_CHECKING:
    from airflow_provider_chamelaion.version_compat import ObjectStoragePath

MediaSource = Union[str, "os.PathLike[str]", "ObjectStoragePath", IO[bytes]]
MediaDestination = Union[str, "os.PathLike[str]", "ObjectStoragePath"]
#: A file or directory on local or object storage: a path, a URI (``s3://bucket/key``) or an
#: ``ObjectStoragePath`` (catalogues, manifests, download destinations).
StorageLocation = Union[str, "os.PathLike[str]", "ObjectStoragePath"]


def _is_uri(value: str) -> bool:
    return "://" in value


def object_storage_path(value: Any) -> ObjectStoragePath:
    """``value`` (a URI string or an ``ObjectStoragePath``) as an ``ObjectStoragePath``."""
    # Imported here: object storage is optional and heavy.
    from airflow_provider_chamelaion.version_compat import ObjectStoragePath

    return value if isinstance(value, ObjectStoragePath) else ObjectStoragePath(value)


def is_object_storage(value: Any) -> bool:
    """Whether ``value`` names object storage: a URI string (``s3://...``, ``file://...``) or an
    ``ObjectStoragePath``, rather than a local path."""
    if isinstance(value, str):
        return _is_uri(value)
    # Avoid importing Airflow's object storage just to find out a Path is not one of them.
    return type(value).__module__.startswith(("airflow.", "upath"))


def storage_path(location: StorageLocation) -> Path | ObjectStoragePath:
    """A local ``Path`` or, for a URI (``s3://...``) or an ``ObjectStoragePath``, an ``ObjectStoragePath``."""
    if is_object_storage(location):
        return object_storage_path(location)
    return Path(os.fspath(location)).expanduser()  # type: ignore[arg-type]


def is_file_object(value: Any) -> bool:
    return hasattr(value, "read") and not isinstance(value, (str, bytes, os.PathLike))


@dataclass(frozen=True)
class MediaInfo:
    """What the multipart part needs to know about one source, learned without reading it."""

    filename: str
    content_type: str
    size: int


def _content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def inspect_source(source: MediaSource, field: str) -> MediaInfo:
    """Check that ``source`` is a non-empty readable file and describe it; raise naming ``field``."""
    if source is None or (isinstance(source, str) and not source.strip()):
        raise ChamelaionConfigError(
            f"{field} is required: give a local path, an object-storage path or a file"
        )
    if is_file_object(source):
        return _inspect_file_object(source, field)  # type: ignore[arg-type]
    if is_object_storage(source):
        check_filesystem(source, field)
        path = object_storage_path(source)
        try:
            is_file = path.is_file()
            size = path.stat().st_size if is_file else 0
        except FileNotFoundError:
            is_file, size = False, 0
        except Exception as err:
            raise ChamelaionConfigError(f"{field} {str(path)!r} cannot be read: {err}") from None
        name = path.name
        shown = str(path)
    else:
        local = Path(os.fspath(source))  # type: ignore[arg-type]
        is_file = local.is_file()
        size = local.stat().st_size if is_file else 0
        name = local.name
        shown = str(local)
    if not is_file:
        raise ChamelaionConfigError(f"{field} {shown!r} does not exist or is not a file")
    if size == 0:
        raise ChamelaionConfigError(f"{field} {shown!r} is empty (0 bytes)")
    return MediaInfo(filename=name, content_type=_content_type(name), size=size)


def _inspect_file_object(fileobj: IO[bytes], field: str) -> MediaInfo:
    name = os.path.basename(str(getattr(fileobj, "name", "") or field))
    if not (hasattr(fileobj, "seekable") and fileobj.seekable()):
        raise ChamelaionConfigError(
            f"{field} is a file object that cannot seek; pass a path, or a seekable file opened in 'rb' mode "
            "(the upload needs its size up front and must be able to start again after a 429)"
        )
    start = fileobj.tell()
    size = fileobj.seek(0, os.SEEK_END) - start
    fileobj.seek(start)
    if size <= 0:
        raise ChamelaionConfigError(f"{field} file object {name!r} has no bytes left to read")
    return MediaInfo(filename=name, content_type=_content_type(name), size=size)


@contextlib.contextmanager
def open_source(source: MediaSource) -> Iterator[IO[bytes]]:
    """Open a source for reading from its start; a caller's file object is rewound, not closed."""
    if is_file_object(source):
        fileobj: IO[bytes] = source  # type: ignore[assignment]
        start = fileobj.tell()
        try:
            yield fileobj
        finally:
            fileobj.seek(start)
        return
    if is_object_storage(source):
        with object_storage_path(source).open("rb") as remote:
            yield remote
        return
    with open(os.fspath(source), "rb") as local:  # type: ignore[arg-type]
        yield local


def check_destination(destination: object) -> None:
    """Reject a missing destination, or one this installation cannot write to, before anything is fetched."""
    if destination is None or (isinstance(destination, str) and not destination.strip()):
        raise ChamelaionConfigError("destination is required: give a local or object-storage file path")
    if not isinstance(destination, (str, os.PathLike)) and not is_object_storage(destination):
        raise ChamelaionConfigError(
            f"destination must be a path or an object-storage URI, got {type(destination).__name__}"
        )
    check_filesystem(destination, "destination")


# -- can this installation use the path's filesystem? ---------------------------------------------

#: What to install for the object stores users ask about most (Airflow reaches them through a provider).
#: Written without the extras' square brackets (``apache-airflow-providers-amazon[s3fs]``): Airflow's CLI
#: tables (``airflow dags list-import-errors``) render text as rich markup, where ``[s3fs]`` is a tag and
#: disappears. Naming the extra's package does the same install.
SCHEME_PACKAGES: dict[str, str] = {
    "s3": "apache-airflow-providers-amazon s3fs",
    "s3a": "apache-airflow-providers-amazon s3fs",
    "gs": "apache-airflow-providers-google",
    "gcs": "apache-airflow-providers-google",
    "abfs": "apache-airflow-providers-microsoft-azure",
    "abfss": "apache-airflow-providers-microsoft-azure",
    "az": "apache-airflow-providers-microsoft-azure",
    "adl": "apache-airflow-providers-microsoft-azure",
}
_LOCAL_SCHEMES = frozenset({"file", "local"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def uri_scheme(value: object) -> str | None:
    """The object-storage scheme of ``value`` (``s3`` for ``s3://dubs/{{ ds }}/x.mp4``), else ``None``.

    Works on unrendered templates: only the text before ``://`` must be literal. A local path, a
    file object, or a value whose scheme is itself templated (``{{ var.value.dest }}``) gives ``None``.
    """
    if isinstance(value, str):
        match = _SCHEME.match(value.strip())
        return match.group(1).lower() if match else None
    if is_object_storage(value) and not is_file_object(value):
        protocol = getattr(value, "protocol", None)
        return protocol.lower() if isinstance(protocol, str) and protocol else None
    return None


def _airflow_has_filesystem(scheme: str) -> bool:
    """Whether Airflow's object storage has a filesystem registered for ``scheme`` (by a provider)."""
    from airflow_provider_chamelaion.version_compat import has_fs

    return bool(has_fs(scheme))


def _missing_fsspec_module(scheme: str) -> str | None:
    """fsspec's own "install X" message when the implementation of ``scheme`` cannot be imported.

    Looked up with ``find_spec``: checking costs no import of s3fs and its dependencies at parse time.
    """
    from fsspec.registry import known_implementations

    known = known_implementations.get(scheme)
    if not known:
        return None
    module = str(known["class"]).split(".", 1)[0]
    if importlib.util.find_spec(module) is not None:
        return None
    return str(known.get("err") or f"install {module}")


def check_filesystem(value: object, field: str) -> None:
    """Raise naming ``field`` and the package to install if this installation cannot use ``value``'s store.

    Meant to run as early as possible (the operators call it when the DAG is parsed, and again on the
    rendered value): a destination that cannot be written must fail before a job is paid for, not after.
    """
    scheme = uri_scheme(value)
    if scheme is None or scheme in _LOCAL_SCHEMES:
        return
    shown = str(value)
    package = SCHEME_PACKAGES.get(scheme)
    if not _airflow_has_filesystem(scheme):
        fix = (
            f"pip install {package}"
            if package
            else f"install the Airflow provider that registers the '{scheme}' filesystem"
        )
        raise ChamelaionConfigError(
            f"{field} {shown!r} is on '{scheme}://' object storage, which this Airflow installation "
            f"cannot use: {fix} (or use a local path)"
        )
    if (missing := _missing_fsspec_module(scheme)) is not None:
        raise ChamelaionConfigError(
            f"{field} {shown!r} is on '{scheme}://' object storage, whose filesystem is not installed: "
            f"{missing}" + (f" (pip install {package})" if package else "")
        )


#: Where a template starts: a value beginning with one is only known once rendered.
_TEMPLATE_STARTS = ("{{", "{%", "{#")


def check_storage_location(value: object, field: str) -> None:
    """Raise naming ``field`` and the fix if ``value`` cannot serve as a batch's manifest or destination.

    Refused: a store this installation cannot use (see :func:`check_filesystem`), and a relative local
    path, which each worker and the triggerer would resolve against its own working directory (the
    worker writes ``backfills/manifest.jsonl`` where the triggerer never looks). Meant for the
    operators' ``__init__`` (on the unrendered template) and again at task start (on the rendered
    value): only what is literal is judged, so ``s3://b/{{ ds }}/`` is checked for its scheme,
    ``dubs/{{ ds }}/`` is refused as relative, and ``{{ var.value.root }}/x`` waits for its rendering.
    ``None`` and empty values are left to the caller's own "is required" check.

    :param value: a local path (``str`` or ``os.PathLike``), a URI or an ``ObjectStoragePath``.
    :param field: what to call it in the message, e.g. ``"backfill: manifest_path"``.
    """
    check_filesystem(value, field)
    if not isinstance(value, (str, os.PathLike)) or uri_scheme(value) is not None:
        return  # object storage (checked above), or not a path at all
    text = os.fspath(value).strip()
    if not text or text.startswith(_TEMPLATE_STARTS) or text.startswith(("/", "~")):
        return
    raise ChamelaionConfigError(
        f"{field} {os.fspath(value)!r} is a relative path: workers and the triggerer run in other working "
        "directories, so each would look for it somewhere else; give an absolute path or a URI such as "
        "s3://bucket/backfills/"
    )


def resolve_destination(
    destination: MediaDestination, default_name: str, *, as_file: bool = False
) -> Path | ObjectStoragePath:
    """Turn ``destination`` into a file path; an existing directory (or a trailing '/') gets ``default_name``.

    ``as_file=True`` takes ``destination`` as the file itself, without asking the store whether a
    directory is there (one call per file on object storage, which a batch of thousands notices).
    """
    check_destination(destination)
    if is_object_storage(destination):
        path = object_storage_path(destination)
        if as_file:
            return path
        if str(destination).endswith("/") or path.is_dir():
            path = path / default_name
        return path
    text = os.fspath(destination)  # type: ignore[arg-type]
    local = Path(text).expanduser()
    if not as_file and (text.endswith(os.sep) or local.is_dir()):
        local = local / default_name
    return local


#: Object stores where one upload appears whole or not at all (S3, Google Cloud Storage, Azure Blob).
#: There an output is spooled to a local temporary file and put once: a temporary key moved into place
#: would cost a put, a server-side copy of the whole object and a delete (plus look-ups) per output.
ATOMIC_PUT_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az"})


def writes_in_one_put(destination: Any) -> bool:
    """Whether :func:`atomic_write` stores ``destination`` with a single upload (S3, GCS, Azure Blob)."""
    return is_object_storage(destination) and str(getattr(destination, "protocol", "")) in ATOMIC_PUT_SCHEMES


#: What every temporary file :func:`atomic_write` creates beside its destination starts and ends with.
TEMPORARY_PREFIX, TEMPORARY_SUFFIX = ".chamelaion-", ".part"


def temporary_name() -> str:
    """A hidden, unique sibling name of 34 characters, whatever the final name's length."""
    return f"{TEMPORARY_PREFIX}{uuid.uuid4().hex[:16]}{TEMPORARY_SUFFIX}"


@contextlib.contextmanager
def atomic_write(destination: Path | ObjectStoragePath) -> Iterator[IO[bytes]]:
    """Write so that ``destination`` holds either its old content or the whole new file, never a part.

    Locally and on stores without atomic uploads: write a temporary sibling and move it into place when
    the block succeeds. On S3, GCS and Azure Blob (:data:`ATOMIC_PUT_SCHEMES`): spool to a local temporary
    file (so the worker needs local space for the outputs it is writing at once) and upload it in one
    put. On any failure nothing is left behind, and a retry starts clean.
    """
    if writes_in_one_put(destination):
        store = cast("ObjectStoragePath", destination)
        with tempfile.NamedTemporaryFile(prefix="chamelaion-", suffix=".part") as spool:
            yield cast("IO[bytes]", spool)
            spool.flush()
            store.fs.put_file(spool.name, store.path)
        return
    # A short name of fixed length, not derived from the final one: ".<name>.<hex>.part" passed the
    # file system's 255-byte limit for a final name that fits (a 240-character reference_id).
    temporary = destination.with_name(temporary_name())
    # Not isinstance(destination, Path): universal-pathlib 0.2.x's file:// paths are Path subclasses
    # whose str() is the URI, which os.replace cannot use.
    local = not is_object_storage(destination)
    if local:
        destination.parent.mkdir(parents=True, exist_ok=True)
    else:
        # Object stores without real directories may refuse this; writing the file works regardless.
        with contextlib.suppress(Exception):
            destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with temporary.open("wb") as handle:
            yield handle
        if local:
            os.replace(temporary, destination)  # type: ignore[arg-type]
        else:
            # The filesystem's own move, not ObjectStoragePath.rename: under universal-pathlib 0.2.x
            # (Airflow 2.11, 3.0, 3.1) rename hands the file:// URIs to os.rename, which fails.
            source, target = cast("ObjectStoragePath", temporary), cast("ObjectStoragePath", destination)
            source.fs.mv(source.path, target.path)
    except BaseException:
        with contextlib.suppress(Exception):
            temporary.unlink(missing_ok=True)
        raise


def file_sizes(
    directory: Path | ObjectStoragePath, names: Iterable[str], *, folder: str | None = None
) -> dict[str, int]:
    """Sizes of those of ``names`` (paths relative to ``directory``) that are files there, and of every file
    under ``directory/folder`` (keyed ``folder/...``).

    On object storage, one recursive listing of ``directory`` (a call per 1,000 objects) instead of a
    call or two per name; locally a ``stat`` per name and a scan of ``folder``, which do not walk
    unrelated files.

    :param directory: a local or object-storage directory.
    :param names: file names relative to ``directory`` (``a.mp4``, ``ep42/dubbed.mp4``).
    :param folder: a subfolder of ``directory`` whose every file is wanted too (the downloads records).
    :return: size in bytes by name; a name that is not a file there is absent.
    """
    if not is_object_storage(directory):
        root = Path(os.fspath(cast("Path", directory)))
        sizes = {name: size for name in names if (size := _size(root / name)) is not None}
        if folder is not None:
            sizes.update(_local_folder_sizes(root, folder))
        return sizes
    store = cast("ObjectStoragePath", directory)
    prefix = store.path.rstrip("/") + "/"
    try:
        found = store.fs.find(prefix, detail=True)
    except FileNotFoundError:
        return {}
    listed = {
        path[len(prefix) :]: int(info.get("size") or 0)
        for path, info in found.items()
        if path.startswith(prefix) and info.get("type", "file") == "file"
    }
    wanted = set(names)
    under = None if folder is None else folder.rstrip("/") + "/"
    return {
        name: size
        for name, size in listed.items()
        if name in wanted or (under is not None and name.startswith(under))
    }


def _local_folder_sizes(root: Path, folder: str) -> dict[str, int]:
    try:
        entries = list(os.scandir(root / folder))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    sizes: dict[str, int] = {}
    for entry in entries:
        with contextlib.suppress(OSError):  # removed meanwhile: as if never there
            if entry.is_file():
                sizes[f"{folder}/{entry.name}"] = entry.stat().st_size
    return sizes


def read_bytes(path: Path | ObjectStoragePath) -> bytes:
    """The whole content of a small file, in one request on object storage (``open`` costs a HEAD too).

    :param path: a local path or an ``ObjectStoragePath``.
    """
    if is_object_storage(path):
        store = cast("ObjectStoragePath", path)
        return bytes(store.fs.cat_file(store.path))
    return Path(os.fspath(cast("Path", path))).read_bytes()


def _size(path: Path) -> int | None:
    """The size of the file at ``path``; ``None`` when there is none (or it is a directory)."""
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None
