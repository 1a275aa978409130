"""What one lip-sync job is made of, from URLs: its two media URLs, its ``reference_id`` and its options.

:class:`JobInputs` is the one place a job's inputs are declared, checked, turned into the request body and
identified, for the hook, both generate operators, the batch catalogue and manifest, and the job identity
an operator derives. A new API option is a field here (with its type in :data:`OPTIONS`) and a parameter
of the operator that exposes it; the catalogue and the manifest carry it without change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_chamelaion.client.wire import validate_http_url, validate_reference_id
from airflow_provider_chamelaion.exceptions import ChamelaionConfigError

#: The API's optional switches and their JSON types (``disable_active_speaker_detection``: max-face
#: preprocessing). Values must be exactly of that type: ``1 == True`` in Python, but the API refuses 1.
OPTIONS: dict[str, type] = {"disable_active_speaker_detection": bool}
#: The fields every job has: the two URLs, then the optional ``reference_id``.
URL_FIELDS = ("video_url", "audio_url")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def url_identity(url: str) -> str:
    """What identifies a media URL: scheme, lower-cased host, port and path.

    The query string and fragment are left out on purpose: pre-signed URLs (S3, GCS, CDN tokens) carry a
    signature and an expiry there that change on every render, so a retry would otherwise see new inputs
    and pay for a second job.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}{parts.path or '/'}"


@dataclass(frozen=True)
class JobInputs:
    """The inputs of one ``POST /v1/lipsync/generate``, checked (build them with :meth:`of` or
    :meth:`check`).

    :param video_url: http(s) URL of the video.
    :param audio_url: http(s) URL of the audio.
    :param reference_id: the caller's identifier of the job (optional).
    :param disable_active_speaker_detection: use max-face preprocessing (optional).
    """

    video_url: str
    audio_url: str
    reference_id: str | None = None
    disable_active_speaker_detection: bool | None = None

    @classmethod
    def check(
        cls, values: Mapping[str, Any], *, reference_id_required: bool = False
    ) -> tuple[JobInputs | None, list[str]]:
        """Check ``values`` (a catalogue row, an operator's arguments): the inputs, or every problem
        (each naming its field); keys that are not inputs are ignored."""
        problems: list[str] = []
        checked: dict[str, Any] = {}
        reference_id = values.get("reference_id")
        if reference_id_required and reference_id in (None, ""):
            problems.append("reference_id is missing")
        elif reference_id is not None:
            _collect(problems, checked, "reference_id", lambda: validate_reference_id(reference_id))
        for field in URL_FIELDS:
            value = values.get(field)
            if value in (None, ""):
                problems.append(f"{field} is missing")
            else:
                _collect(problems, checked, field, lambda f=field, v=value: validate_http_url(v, f))
        for option, kind in OPTIONS.items():
            value = values.get(option)
            if value is not None and type(value) is not kind:
                problems.append(f"{option} must be {_kind_name(kind)} or absent, got {value!r}")
            checked[option] = value
        return (None, problems) if problems else (cls(**checked), [])

    @classmethod
    def of(cls, **values: Any) -> JobInputs:
        """Checked inputs from keyword arguments; raises :class:`ChamelaionConfigError` naming each bad
        field, or an argument that is not an input."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ChamelaionConfigError(
                f"not a job input: {', '.join(unknown)}; the inputs are {', '.join(_field_names())}"
            )
        inputs, problems = cls.check(values)
        if inputs is None:
            raise ChamelaionConfigError("; ".join(problems))
        return inputs

    @property
    def options(self) -> dict[str, Any]:
        """The options that are set (``None`` means the API's default)."""
        return {name: getattr(self, name) for name in OPTIONS if getattr(self, name) is not None}

    def body(self) -> dict[str, Any]:
        """The JSON body of ``POST /v1/lipsync/generate``; optional keys appear only when given."""
        body: dict[str, Any] = {
            "inputs": [{"type": "video", "url": self.video_url}, {"type": "audio", "url": self.audio_url}],
            **self.options,
        }
        if self.reference_id is not None:
            body["reference_id"] = self.reference_id
        return body

    def identity(self) -> dict[str, Any]:
        """What makes two jobs the same work: each URL's identity (:func:`url_identity`) and the options;
        not the ``reference_id``, which names the job rather than its inputs."""
        return {
            "video": url_identity(self.video_url),
            "audio": url_identity(self.audio_url),
            **{name: getattr(self, name) for name in OPTIONS},
        }

    def to_dict(self) -> dict[str, Any]:
        """The inputs as a catalogue row (JSON): the set fields only."""
        return {name: value for name, value in dataclasses.asdict(self).items() if value is not None}

    def replace(self, **changes: Any) -> JobInputs:
        return dataclasses.replace(self, **changes)


def _collect(problems: list[str], checked: dict[str, Any], field: str, check: Any) -> None:
    try:
        checked[field] = check()
    except ChamelaionConfigError as err:
        problems.append(str(err))


def _kind_name(kind: type) -> str:
    return "true or false (a boolean)" if kind is bool else f"a {kind.__name__}"


def _field_names() -> list[str]:
    return [field.name for field in dataclasses.fields(JobInputs)]


__all__ = ["OPTIONS", "JobInputs", "url_identity"]
