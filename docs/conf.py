"""Sphinx configuration of the user docs (``make docs``; ``make test`` builds them too).

Pages are Markdown (MyST), the API page is autodoc over the public modules' ``__all__``, and example
code is included from ``example_dags/`` between ``[START howto_…]`` markers, so a page cannot show code
the tests do not run. Warnings are errors (``-W -n``): a broken reference fails the build.
"""

from __future__ import annotations

import logging
import os
import pkgutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

from sphinx.util.nodes import make_refnode

if TYPE_CHECKING:
    from docutils.nodes import Element
    from sphinx.addnodes import pending_xref
    from sphinx.application import Sphinx
    from sphinx.domains.python import PythonDomain
    from sphinx.environment import BuildEnvironment

PACKAGE = "airflow_provider_chamelaion"

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# autodoc imports the operators, hence Airflow, which writes its config into AIRFLOW_HOME on first
# import: never into the user's ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / "docs" / "_build" / "airflow-home"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

# Airflow logs its configuration's path at INFO when first imported (by autodoc): not a docs message.
logging.disable(logging.INFO)
import airflow  # noqa: E402, F401

logging.disable(logging.NOTSET)

from airflow_provider_chamelaion import __version__  # noqa: E402  (the one source of the version)

project = "airflow-provider-chamelaion"
author = "airflow-provider-chamelaion developers"
copyright = "the airflow-provider-chamelaion developers, Apache License 2.0"
version = release = __version__

#: Where links to files outside docs/ (benchmarks, tests, CI) point: {source}`benchmarks/results.md`.
REPOSITORY = "https://github.com/chamelaion/airflow-provider-chamelaion"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.extlinks",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence", "deflist"]
# Headings become link targets (`connections.md#a-base-url-without-its-path-prefix`) down to level 3.
myst_heading_anchors = 3

extlinks = {"source": (f"{REPOSITORY}/blob/main/%s", "%s")}

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Airflow's operators and hooks carry dozens of inherited members: show only what a class defines.
autodoc_inherit_docstrings = False

# No intersphinx (the build must run offline): names from Python, Airflow and the HTTP libraries are
# shown as written, not linked. So are the provider's internal modules, which the API page does not
# document (they may change). Every other reference must resolve.
nitpicky = True
#: The internal modules (see the API page): references into them are plain text.
INTERNAL = (
    r"airflow_provider_chamelaion\.(version_compat|get_provider_info|utils|operators\.common"
    r"|client\.(wire|media|multipart|session|settings)|batch\.(listing|submit|download|record)"
    r"|simulator\.(state|server|app|process))(\..*)?"
)
nitpick_ignore_regex = [
    (r"py:.*", r"(airflow|requests|aiohttp|fsspec|upath|pendulum|starlette|fastapi|uvicorn)(\..*)?"),
    (r"py:.*", r"(datetime|pathlib|collections\.abc|contextlib|typing|asyncio|enum|io|os|types)\..*"),
    (r"py:.*", INTERNAL),
    # Names the public modules import for their annotations (``from __future__ import annotations``
    # leaves them as written): Python's, Airflow's and the internal modules' types.
    (
        r"py:.*",
        r"(Awaitable|Callable|Iterator|AsyncIterator|Mapping|Sequence|Path|timedelta|datetime"
        r"|AbstractAsyncContextManager|Context|XComArg|ObjectStoragePath|OperatorLineage"
        r"|MediaSource|MediaDestination|StorageLocation|CatalogueSource|SubmitReport|SavedOutput"
        r"|SharedSessionClient|ApiSettings|LipsyncOutputLink)",
    ),
    # A type variable, and the pieces Sphinx makes of a quoted annotation in a dataclass signature.
    (r"py:class", r"airflow_provider_chamelaion\.client\.retry\.T|'.*"),
]

html_theme = "furo"
html_title = f"airflow-provider-chamelaion {release}"
html_static_path: list[str] = []


def _same_object(name: str, other: str) -> bool:
    """Whether two dotted names are one Python object (a public name re-exported by its package)."""
    try:
        return pkgutil.resolve_name(name) is pkgutil.resolve_name(other)
    except (ImportError, AttributeError, ValueError):
        return False


def _resolve_short_name(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element
) -> Element | None:
    """Link a name written as its own module imports it (``JobInputs``, ``LipsyncRequest.to_dict``) to
    the one documented object so named, and a public object named by the module that defines it
    (``simulator.state.SimulatorState``) to where the API page documents it (``simulator``)."""
    if node.get("refdomain") != "py":
        return None
    domain = cast("PythonDomain", env.get_domain("py"))
    target = node["reftarget"].lstrip(".~")
    qualified = target.startswith(PACKAGE + ".")
    name = target.rsplit(".", 1)[-1] if qualified else target
    matches = domain.find_obj(env, "", "", name, node["reftype"], searchmode=1)
    if len(matches) != 1:
        return None
    full_name, entry = matches[0]
    if qualified and not _same_object(target, full_name):
        return None
    return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, full_name)


def setup(app: Sphinx) -> None:
    app.connect("missing-reference", _resolve_short_name)
