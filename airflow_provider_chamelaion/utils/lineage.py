"""OpenLineage datasets for the operators, following the OpenLineage provider's naming.

Imported only by ``get_openlineage_facets_on_complete``, which Airflow calls only when
``apache-airflow-providers-openlineage`` is installed and enabled (``pip install
airflow-provider-chamelaion[openlineage]``); nothing here is imported otherwise. The OpenLineage
classes themselves are imported inside the functions, like the official providers do.

Naming (https://openlineage.io/docs/spec/naming, as ``apache-airflow-providers-common-io`` applies it):

* a local file: namespace ``file``, name its absolute path;
* object storage: namespace ``<scheme>://<bucket>``, name the key (``ObjectStoragePath.namespace`` /
  ``.key``, what the common-io file transfer operator reports);
* an http(s) URL (URL-mode inputs): namespace ``<scheme>://<host[:port]>``, name the path, without the
  query string (it may hold a signature) and without user info (``user:password@`` is a credential);
* the lip-sync job: namespace the API's origin, name the request's path
  (``/api/v1/lipsync/requests/<id>``), the output of the generate task and the input of the download
  task, so lineage reads media → job → file. The request id is also sent as the standard
  ``externalQuery`` run facet.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_chamelaion.client.media import is_file_object, is_object_storage, object_storage_path
from airflow_provider_chamelaion.client.wire import host_and_port, request_path

if TYPE_CHECKING:
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

#: ``externalQuery`` facet's ``source``: which system the id belongs to.
SOURCE = "chamelaion"


def media_dataset(value: Any) -> Dataset | None:
    """The dataset of one input or output: an http(s) URL, a local path or an object-storage path."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    if value is None or is_file_object(value):
        name = getattr(value, "name", None)
        if isinstance(name, str) and os.path.isabs(name):
            return Dataset(namespace="file", name=name)
        return None  # an anonymous stream has no name to report
    if isinstance(value, str) and urlsplit(value).scheme in ("http", "https"):
        parts = urlsplit(value)
        return Dataset(namespace=f"{parts.scheme}://{host_and_port(parts.netloc)}", name=parts.path or "/")
    if is_object_storage(value):
        path = object_storage_path(value)
        if path.protocol in ("file", "local"):
            return Dataset(namespace="file", name="/" + path.key.lstrip("/"))
        return Dataset(namespace=path.namespace, name=path.key)
    return Dataset(namespace="file", name=os.path.abspath(os.fspath(value)))


def job_dataset(base_url: str, request_id: str) -> Dataset:
    """The lip-sync job as a dataset: the API's origin and the request's path."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    parts = urlsplit(base_url)
    return Dataset(
        namespace=f"{parts.scheme}://{host_and_port(parts.netloc)}",
        name=parts.path + request_path(request_id),
    )


def job_run_facets(request_id: str) -> dict[str, Any]:
    from airflow.providers.common.compat.openlineage.facet import ExternalQueryRunFacet

    return {"externalQuery": ExternalQueryRunFacet(externalQueryId=request_id, source=SOURCE)}


def operator_lineage(
    inputs: list[Dataset | None], outputs: list[Dataset | None], run_facets: dict[str, Any] | None = None
) -> OperatorLineage:
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(
        inputs=[dataset for dataset in inputs if dataset is not None],
        outputs=[dataset for dataset in outputs if dataset is not None],
        run_facets=run_facets or {},
    )
