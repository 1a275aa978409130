"""Finding many requests at once for the fewest API calls: listing pages, or one look-up each.

The API has no bulk look-up: a batch learns about its jobs either from ``GET /v1/lipsync/requests``
pages (newest first, ``limit``/``offset``) or from one call per item. :class:`ListingScan` decides,
page by page, which is cheaper, and walks the listing safely:

* it follows the page size the server *applied* (``pagination.limit``; a server may clamp ``limit``);
* jobs created meanwhile push older ones to later offsets, so the same job can appear on two pages:
  pages are deduplicated by id, and nothing is ever skipped (offsets only move items down);
* a page that comes back empty before ``total`` (a listing shifting under concurrent writes) is read
  once more; if it is still empty the walk stops *without* claiming the rest does not exist, so the
  caller looks up what it has not found instead of paying for it again;
* it stops at the latest ``total``, when nothing is left to find, or once the pages left cost more
  than one look-up per item still missing and the last page found none of them.

"Not found in the listing" decides whether a batch pays for a job, so :func:`find_jobs` claims it only
after a walk to the end that saw as many distinct jobs as the listing holds; otherwise it looks the
missing items up one by one. :func:`read_newest` reads what was created since a known job, for the
submission guard of :mod:`.submit`. The batch trigger's polls use :class:`ListingScan` too.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider_chamelaion.client.models import LipsyncRequest, Outcome, RequestPage

if TYPE_CHECKING:
    from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

#: How many times a page that is empty before ``total`` is read again before the walk gives up on it.
EMPTY_PAGE_REREADS = 1


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
    #: The newest job of the first page: what :func:`read_newest` reads back to.
    newest_id: str | None = None
    #: A page stayed empty before ``total``: what lies past it was not seen.
    interrupted: bool = False
    #: ``total`` as the first page gave it (a walk during which it changed is verified).
    first_total: int | None = None
    _last_missing: int | None = field(default=None, repr=False)
    _empty_reads: int = field(default=0, repr=False)

    def _end(self) -> int:
        assert self.total is not None
        if self.horizon is None:
            return self.total
        position, total_then = self.horizon
        return min(self.total, position + max(0, self.total - total_then))

    def next_offset(self, missing: int) -> int | None:
        """Offset of the next page to fetch, or ``None`` to stop, given how many items are still missing."""
        if missing <= 0 or self.interrupted:
            return None
        if self.total is None:
            self._last_missing = missing
            return 0  # the first page also tells the total and the applied page size
        end = self._end()
        if self.offset >= end:
            return None
        if self._empty_reads:
            return self.offset  # read the page that came back empty once more
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
        """Whether the walk reached the end of the listing without a gap."""
        return self.total is not None and self.offset >= self.total and not self.interrupted

    def feed(self, page: RequestPage) -> list[LipsyncRequest]:
        """Take a page; return the requests not seen on an earlier page."""
        self.pages += 1
        self.total = page.total
        if self.first_total is None:
            self.first_total = page.total
            self.newest_id = page.data[0].id if page.data else None
        self.applied_limit = page.limit or len(page.data) or self.page_size
        if page.data:
            self.offset += len(page.data)
            self._empty_reads = 0
        elif self.offset < page.total and self._empty_reads < EMPTY_PAGE_REREADS:
            self._empty_reads += 1  # empty before total: read it again
        elif self.offset < page.total:
            self.interrupted = True  # still empty: stop, and do not claim the rest does not exist
            self._empty_reads = 0
        else:
            self.offset = page.total
        fresh = [request for request in page.data if request.id not in self.seen]
        self.seen.update(request.id for request in fresh)
        return fresh


@dataclass
class NewRequests:
    """What :func:`read_newest` found: the requests created since the known one, newest first."""

    requests: list[LipsyncRequest]
    #: The newest id now (the next read goes back to it).
    newest_id: str | None
    total: int
    pages: int
    #: Whether the read reached the known id (or the end of the listing): nothing newer was missed.
    complete: bool


def read_newest(
    hook: ChamelaionHook, since_id: str | None, *, since_total: int, page_size: int = 100
) -> NewRequests:
    """The requests created after ``since_id``, newest first, reading pages from the top until it.

    Reads no more pages than the growth of ``total`` since ``since_total`` needs (plus one), so a job that
    vanished from the listing cannot turn one read into a walk of the whole account.
    """
    found: list[LipsyncRequest] = []
    seen: set[str] = set()
    offset = pages = 0
    newest_id, total = since_id, since_total
    while True:
        page = hook.list_requests(limit=page_size, offset=offset)
        pages += 1
        total = page.total
        if pages == 1 and page.data:
            newest_id = page.data[0].id
        for request in page.data:
            if request.id == since_id:
                return NewRequests(found, newest_id, total, pages, complete=True)
            if request.id not in seen:
                seen.add(request.id)
                found.append(request)
        offset += len(page.data)
        budget = math.ceil(max(0, total - since_total) / max(1, page.limit or page_size)) + 1
        if not page.data or offset >= total:
            return NewRequests(found, newest_id, total, pages, complete=since_id is None or not page.data)
        if pages >= budget:
            return NewRequests(found, newest_id, total, pages, complete=False)


@dataclass
class JobLookup:
    """What :func:`find_jobs` found: per ``reference_id`` the job to reuse, and what it cost."""

    found: dict[str, LipsyncRequest]
    list_calls: int
    lookup_calls: int
    #: The newest job on the account when the look-up ended, and the total then (for :func:`read_newest`).
    newest_id: str | None = None
    total: int = 0
    #: Jobs found that are still queued or running: someone may be submitting these items right now.
    in_flight: int = 0

    @property
    def api_calls(self) -> int:
        return self.list_calls + self.lookup_calls


def _alive(request: LipsyncRequest, ignore: Collection[str]) -> bool:
    return request.outcome is not Outcome.FAILED and request.id not in ignore


def _newest_alive(
    requests: Iterable[LipsyncRequest], wanted: Collection[str], ignore: Collection[str]
) -> dict[str, LipsyncRequest]:
    """Per wanted ``reference_id``, the first request (listing order: newest first) that has not failed."""
    found: dict[str, LipsyncRequest] = {}
    for request in requests:
        reference = request.reference_id
        if (
            reference is not None
            and reference in wanted
            and reference not in found
            and _alive(request, ignore)
        ):
            found[reference] = request
    return found


def find_jobs(
    hook: ChamelaionHook,
    reference_ids: Collection[str],
    *,
    page_size: int = 100,
    ignore: Collection[str] = (),
) -> JobLookup:
    """For every ``reference_id``, the newest job with it that has not failed (absent: none exists).

    Costs at most the listing's pages (``ceil(total / applied limit)``) and never more than about one
    call per item: when the pages left outnumber the items still missing, those are looked up one by
    one (``GET /requests?reference_id=``) instead. Absence is concluded from the listing only after a
    walk to its end that saw every job it holds; otherwise the missing items are looked up.

    :param ignore: ids of jobs that must not be reused (e.g. submitted for an item whose inputs changed).
    """
    wanted = set(reference_ids)
    found: dict[str, LipsyncRequest] = {}
    scan = ListingScan(page_size)
    while (offset := scan.next_offset(len(wanted) - len(found))) is not None:
        page = hook.list_requests(limit=page_size, offset=offset)
        for reference, request in _newest_alive(scan.feed(page), wanted - set(found), ignore).items():
            found[reference] = request  # newest first: an earlier page's job is newer
    newest_id, total, list_calls = scan.newest_id, scan.first_total or 0, scan.pages
    complete = scan.exhausted and len(scan.seen) >= (scan.total or 0)
    if scan.exhausted and scan.total != scan.first_total:
        # The listing changed during the walk: read what was created meanwhile (it sits above where the
        # walk began), then check that no job slipped past the walk.
        new = read_newest(hook, scan.newest_id, since_total=scan.first_total or 0, page_size=page_size)
        list_calls += new.pages
        newest_id, total = new.newest_id, new.total
        scan.seen.update(request.id for request in new.requests)
        found.update(_newest_alive(new.requests, wanted, ignore))  # newer than anything the walk found
        complete = new.complete and len(scan.seen) >= new.total
    lookups = 0
    if not complete:
        for reference in sorted(wanted - set(found)):
            lookups += 1
            alive = [r for r in hook.find_requests(reference) if _alive(r, ignore)]
            if alive:
                found[reference] = alive[0]
    in_flight = sum(request.outcome is Outcome.RUNNING for request in found.values())
    return JobLookup(found, list_calls, lookups, newest_id, total, in_flight)
