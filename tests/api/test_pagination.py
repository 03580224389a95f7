"""Pagination of every list that can grow: `limit` (default, maximum, 422 above) and a keyset
`cursor`; the body stays the same list, the next page's cursor comes in X-Next-Cursor and Link."""

import pytest
from sqlalchemy import select

from campaigns.db import session_scope
from campaigns.models import AllocationSnapshot, ModelAction, Segment, SendPeriod
from tests.factories import campaign_payload, small_campaign_payload


def walk(api, path: str, limit: int, role: str = "analyst") -> list[list]:
    """Every page of a list, following X-Next-Cursor (and checking Link says the same)."""
    pages, cursor = [], None
    while True:
        params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        r = api("GET", path, role, params=params)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        cursor = r.headers.get("X-Next-Cursor")
        if cursor is None:
            assert "Link" not in r.headers
            return pages
        assert r.headers["Link"].endswith('rel="next"') and f"cursor={cursor}" in r.headers["Link"]
        assert len(pages) < 100, "the cursor does not advance"


def test_segments_page_by_page_cover_the_whole_list_once(api):
    for i in range(5):
        assert api("POST", "/segments", "marketer", json={"name": f"extra_{i}"}).status_code == 201
    whole = api("GET", "/segments", "analyst").json()
    assert len(whole) == 13  # the 8 seeded and 5 more: one default page
    pages = walk(api, "/segments", 4)
    assert [len(p) for p in pages] == [4, 4, 4, 1]
    assert [s for p in pages for s in p] == whole


def test_limit_is_bounded_and_a_bad_cursor_is_refused(api, settings_env):
    settings_env(MAB_MAX_PAGE_SIZE=5)
    r = api("GET", "/segments", "analyst", params={"limit": 6})
    assert r.status_code == 422
    assert r.json() == {"error": "invalid_input",
                        "detail": [{"loc": "limit", "msg": "at most 5 items per page (MAB_MAX_PAGE_SIZE)"}]}
    assert api("GET", "/segments", "analyst", params={"limit": 0}).status_code == 422
    default = api("GET", "/segments", "analyst")  # the default page shrinks to the maximum
    assert len(default.json()) == 5 and default.headers["X-Next-Cursor"]
    for bad in ("abc", "-1", "1.2"):
        r = api("GET", "/segments", "analyst", params={"cursor": bad})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "cursor"


def test_default_page_size_is_a_setting(api, settings_env):
    settings_env(MAB_DEFAULT_PAGE_SIZE=3)
    r = api("GET", "/segments", "analyst")
    assert len(r.json()) == 3 and "X-Next-Cursor" in r.headers


def test_campaigns_by_cursor_and_by_offset(api):
    ids = [api("POST", "/campaigns", "marketer", json=small_campaign_payload(name=f"c{i}")).json()["id"]
           for i in range(5)]
    pages = walk(api, "/campaigns", 2)
    assert [c["id"] for p in pages for c in p] == ids
    r = api("GET", "/campaigns", "analyst", params={"offset": 3})  # the old offset still works
    assert [c["id"] for c in r.json()] == ids[3:]


def test_variants_default_to_the_largest_page(api):
    cid = api("POST", "/campaigns", "marketer", json=campaign_payload()).json()["id"]
    whole = api("GET", f"/campaigns/{cid}/variants", "analyst")
    assert len(whole.json()) == 200 and "X-Next-Cursor" not in whole.headers  # the demo reads it whole
    pages = walk(api, f"/campaigns/{cid}/variants", 64)
    assert [len(p) for p in pages] == [64, 64, 64, 8]
    assert [v["arm"] for p in pages for v in p] == list(range(200))


@pytest.fixture
def history(api):
    """A campaign with 7 completed periods, a snapshot per period and segment, and 5 model actions."""
    cid = api("POST", "/campaigns", "marketer", json=small_campaign_payload()).json()["id"]
    with session_scope() as s:
        segments = [s.execute(select(Segment.id).where(Segment.name == n)).scalar_one()
                    for n in ("champions", "hibernating")]
        for number in range(1, 8):
            period = SendPeriod(campaign_id=cid, number=number, status="completed", seed=number)
            s.add(period)
            s.flush()
            for seg in reversed(segments):  # inserted out of order: the list orders by (period, segment)
                s.add(AllocationSnapshot(campaign_id=cid, period_id=period.id, segment_id=seg, version=number,
                                         seed=1, stage="bandit", holdout_share=0.1, arms=[0], weights=[1.0],
                                         p_best=[1.0], counts={}))
        for i in range(5):
            s.add(ModelAction(campaign_id=cid, segment_id=segments[i % 2], action="uniform", reason=f"r{i}",
                              key_name="t", key_role="marketer"))
    return cid


def test_periods_allocations_and_the_version_timeline_are_paginated(api, history):
    cid = history
    periods = walk(api, f"/campaigns/{cid}/periods", 3)
    assert [[p["number"] for p in page] for page in periods] == [[1, 2, 3], [4, 5, 6], [7]]

    whole = api("GET", f"/campaigns/{cid}/allocations", "analyst").json()
    assert [(a["period_number"], a["segment"]) for a in whole[:2]] == [(1, "champions"), (1, "hibernating")]
    pages = walk(api, f"/campaigns/{cid}/allocations", 5)
    assert [len(p) for p in pages] == [5, 5, 4]
    assert [a for p in pages for a in p] == whole

    pages = walk(api, f"/campaigns/{cid}/versions", 2)
    assert [len(p["timeline"]) for p in pages] == [2, 2, 1]
    assert [a["reason"] for p in pages for a in p["timeline"]] == [f"r{i}" for i in range(5)]
    # The segments' modes come whole with every page, from the whole timeline.
    assert all({s["segment"]: s["mode"] for s in p["segments"]} == {"champions": "uniform", "hibernating": "uniform"}
               for p in pages)


def test_an_unknown_campaign_is_404_not_an_empty_page(api):
    for path in ("variants", "periods", "allocations", "versions"):
        assert api("GET", f"/campaigns/999999/{path}", "analyst").status_code == 404
