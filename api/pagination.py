"""Pagination of every list that can grow: `?limit=` (default MAB_DEFAULT_PAGE_SIZE, at most
MAB_MAX_PAGE_SIZE, 422 above) and `?cursor=`. The body stays the list it always was; the next
page's cursor travels in the `X-Next-Cursor` header and a `Link: <…>; rel="next"` header, both absent
on the last page."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request, Response

from campaigns.errors import InvalidInput
from campaigns.settings import get_settings

NEXT_CURSOR = "X-Next-Cursor"

Limit = Annotated[int | None, Query(ge=1, description="Items per page (default MAB_DEFAULT_PAGE_SIZE, at most "
                                    "MAB_MAX_PAGE_SIZE).")]
# The cursors' shapes are documented (an id, or a version.segment pair) so that a client learns which
# strings can be cursors at all; the services check them (a 422 naming `cursor`).
Cursor = Annotated[str | None, Query(max_length=64, json_schema_extra={"pattern": r"^[0-9]{1,18}$"},
                                     description="The `X-Next-Cursor` header of the previous page.")]
PairCursor = Annotated[str | None, Query(max_length=64, json_schema_extra={"pattern": r"^[0-9]{1,18}\.[0-9]{1,18}$"},
                                         description="The `X-Next-Cursor` header of the previous page.")]


@dataclass(frozen=True)
class Page:
    limit: int
    cursor: str | None


def _page(limit: int | None, cursor: str | None, default: int) -> Page:
    cap = get_settings().max_page_size
    if limit is not None and limit > cap:
        raise InvalidInput("limit", f"at most {cap} items per page (MAB_MAX_PAGE_SIZE)")
    return Page(limit=min(default, cap) if limit is None else limit, cursor=cursor)


def page_params(limit: Limit = None, cursor: Cursor = None) -> Page:
    return _page(limit, cursor, get_settings().default_page_size)


def whole_page_params(limit: Limit = None, cursor: Cursor = None) -> Page:
    """For lists a client reads whole and that have a cap of their own (a campaign's variants, at
    most MAB_MAX_VARIANTS_PER_CAMPAIGN): the default page is the largest one."""
    return _page(limit, cursor, get_settings().max_page_size)


def pair_page_params(limit: Limit = None, cursor: PairCursor = None) -> Page:
    return _page(limit, cursor, get_settings().default_page_size)


PageDep = Annotated[Page, Depends(page_params)]
PairPageDep = Annotated[Page, Depends(pair_page_params)]
WholePageDep = Annotated[Page, Depends(whole_page_params)]


def link_next(request: Request, response: Response, next_cursor: str | None) -> None:
    if next_cursor is None:
        return
    response.headers[NEXT_CURSOR] = next_cursor
    response.headers["Link"] = f'<{request.url.include_query_params(cursor=next_cursor)}>; rel="next"'
