"""The download operator's destination as an Airflow asset (``Asset`` on Airflow 3, ``Dataset`` on 2.x).

A DAG scheduled on the asset runs when a new output lands ("a new dubbed episode"); each asset event
carries ``extra = {"path": <file written>, "request_id": <job id>}`` so the consumer knows which file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow_provider_chamelaion.client.media import uri_scheme
from airflow_provider_chamelaion.exceptions import ChamelaionConfigError


def asset_class() -> type:
    """Airflow's asset class (``Dataset`` on 2.x), from the compat module on first use."""
    from airflow_provider_chamelaion.version_compat import Asset

    return Asset


def destination_asset(asset: Any, destination: Any, task_id: str) -> Any | None:
    """The asset a download declares: ``asset`` itself, or with ``asset=True`` one for ``destination``.

    ``True`` needs a destination that is the same every run: a templated one names a different file
    each run, so name the stream of files with an ``Asset`` of your own instead.
    """
    if asset is None or asset is False:
        return None
    if asset is not True:
        if not isinstance(asset, asset_class()):
            raise ChamelaionConfigError(
                f"{task_id}: asset must be True or an Airflow Asset, got {type(asset).__name__}"
            )
        return asset
    text = str(destination) if destination is not None else ""
    if not isinstance(destination, (str, os.PathLike)) or "{{" in text or "{%" in text:
        raise ChamelaionConfigError(
            f"{task_id}: asset=True needs a fixed destination, got {text or type(destination).__name__!r}; "
            "for a templated destination pass asset=Asset('<name>', uri='<where the files land>')"
        )
    uri = text if uri_scheme(destination) else Path(text).expanduser().absolute().as_uri()
    return asset_class()(uri=uri)
