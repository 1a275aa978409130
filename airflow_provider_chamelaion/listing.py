"""Finding many requests at once for the fewest API calls: listing pages, or one look-up each.

The API has no bulk look-up: a batch learns about its jobs either from ``GET /v1/lipsync/requests``
pages (newest first, ``limit``/``offset``) or from one call per item. :class:`ListingScan` decides,
page by page, which is cheaper, and walks the listing safely:

* it follows the page size the server *applied* (``pagination.limit``; a server may clamp ``limit``);
* jobs created meanwhile push older ones to later offsets, so the same job can appear on two pages:
  pages are deduplicated by id, and nothing is ever skipped (offsets only move items down);
* it stops at the latest ``total``, at an empty page, when nothing is left to find, or once the pages
  left cost more than one look-up per item still missing and the last page found none of them (the
  caller then looks those up).

The sync reconcile of the batch operator and the async polls of the batch trigger both use it.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider_chamelaion.models import LipsyncRequest, Outcome, RequestPage

if TYPE_CHECKING:
    from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook


@dataclass
class ListingScan:
    """The plan of one walk through the listing; feed it each page it asked for.

    :param page_size: the ``limit`` to ask for (the server may apply less).
    """

    page_size: int = 100
    offset: int = 0
    total: int | None = None
    applied_limit: int | None = None
    pages: int = 0
    seen: set[str] = field(default_factory=set)
    #: Where the wanted items were last time: (offset just past the deepest one, the total then). Jobs
    #: created since push it down by the growth of the total; past it, look-ups are used instead.
    horizon: tuple[int, int] | None = None
    _last_missing: int | None = field(default=None, repr=False)

    def _end(self) -> int:
        assert self.total is not None
        if self.horizon is None:
            return self.total
        position, total_then = self.horizon
        return min(self.total, position + max(0, self.total - total_then))

    def next_offset(self, missing: int) -> int | None:
        """Offset of the next page to fetch, or ``None`` to stop, given how many items are still missing."""
        if missing <= 0:
            return None
        if self.total is None:
            self._last_missing = missing
            return 0  # the first page also tells the total and the applied page size
        end = self._end()
        if self.offset >= end:
            return None
        pages_left = math.ceil((end - self.offset) / max(1, self.applied_limit or self.page_size))
        found_on_last_page = self._last_missing - missing if self._last_missing is not None else 0
        self._last_missing = missing
        if pages_left <= missing or found_on_last_page > 0:
            # The rest of the listing costs no more than a look-up per missing item; or the page just
            # read held wanted items, so the next one likely does too (a batch's jobs sit together).
            return self.offset
        return None  # one look-up per missing item is cheaper

    @property
    def exhausted(self) -> bool:
        """Whether the walk reached the end of the listing (so anything not seen does not exist)."""
        return self.total is not None and self.offset >= self.total

    def feed(self, page: RequestPage) -> list[LipsyncRequest]:
        """Take a page; return the requests not seen on an earlier page."""
        self.pages += 1
        self.total = page.total
        self.applied_limit = page.limit or len(page.data) or self.page_size
        if page.data:
            self.offset += len(page.data)
        else:
            self.offset = max(self.offset, page.total)  # an empty page ends the walk
        fresh = [request for request in page.data if request.id not in self.seen]
        self.seen.update(request.id for request in fresh)
        return fresh


@dataclass
class Reconciliation:
    """What :func:`reconcile` found: per ``reference_id`` the job to reuse, and what it cost."""

    found: dict[str, LipsyncRequest]
    list_calls: int
    lookup_calls: int

    @property
    def api_calls(self) -> int:
        return self.list_calls + self.lookup_calls


def reconcile(
    hook: ChamelaionHook, reference_ids: Collection[str], *, page_size: int = 100
) -> Reconciliation:
    """For every ``reference_id``, the newest job with it that has not failed (absent: none exists).

    Costs at most the listing's pages (``ceil(total / applied limit)``) and never more than about one
    call per item: when the pages left outnumber the items still missing, those are looked up one by
    one (``GET /requests?reference_id=``) instead.
    """
    wanted = set(reference_ids)
    found: dict[str, LipsyncRequest] = {}
    scan = ListingScan(page_size)
    while (offset := scan.next_offset(len(wanted) - len(found))) is not None:
        page = hook.list_requests(limit=page_size, offset=offset)
        for request in scan.feed(page):
            reference = request.reference_id
            # Newest first: the first job seen that has not failed is the newest such job.
            if reference in wanted and reference not in found and request.outcome is not Outcome.FAILED:
                found[reference] = request
    lookups = 0
    if not scan.exhausted:
        for reference in sorted(wanted - set(found)):
            lookups += 1
            alive = [r for r in hook.find_requests(reference) if r.outcome is not Outcome.FAILED]
            if alive:
                found[reference] = alive[0]
    return Reconciliation(found, scan.pages, lookups)
