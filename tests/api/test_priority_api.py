"""A campaign's priority through the API: a 422 naming the field for anything but an integer in
range, editable alone at any status; a period shows the customers it lost to other campaigns."""

import pytest

from campaigns.services import periods
from campaigns.settings import get_settings
from tests.api.test_campaigns_api import table_counts
from tests.factories import customers, small_campaign_payload

BAD_PRIORITIES = [1.5, "3", True, None, 1001, -1001, [1]]


@pytest.mark.parametrize("bad", BAD_PRIORITIES, ids=[repr(b) for b in BAD_PRIORITIES])
def test_a_priority_that_is_not_an_integer_in_range_is_a_422_naming_it(api, bad):
    r = api("POST", "/campaigns", "marketer", json=small_campaign_payload(priority=bad))
    assert r.status_code == 422, r.text
    assert [d["loc"] for d in r.json()["detail"]] == ["priority"]
    assert table_counts() == (0, 0)  # nothing written


def test_priority_is_stored_shown_and_editable_alone_while_active(api, monkeypatch):
    monkeypatch.setenv("MAB_FREQUENCY_CAP", "1")
    get_settings.cache_clear()
    try:
        assert api("POST", "/customers", "marketer", json={"customers": customers(20)}).status_code in (200, 202)
        low = api("POST", "/campaigns", "marketer", json=small_campaign_payload(name="low")).json()
        high = api("POST", "/campaigns", "marketer", json=small_campaign_payload(name="high", priority=2)).json()
        assert (low["priority"], high["priority"]) == (0, 2)
        for c in (low, high):
            assert api("POST", f"/campaigns/{c['id']}/start", "marketer").status_code == 200
        r = api("PATCH", f"/campaigns/{high['id']}", "marketer", json={"priority": 7})
        assert r.status_code == 200 and r.json()["priority"] == 7
        assert api("PATCH", f"/campaigns/{high['id']}", "marketer", json={"priority": 7.5}).status_code == 422
        r = api("PATCH", f"/campaigns/{high['id']}", "marketer", json={"priority": 1, "name": "x"})
        assert r.status_code == 409  # with anything else: the drafts-only rule
        numbers = {}
        for c in (low, high):
            r = api("POST", f"/campaigns/{c['id']}/periods", "marketer")
            assert r.status_code == 202, r.text
            numbers[c["id"]] = r.json()["id"]
        assert periods.run_period(numbers[high["id"]]) == "completed"
        assert periods.run_period(numbers[low["id"]]) == "completed"
        shown = api("GET", f"/campaigns/{low['id']}/periods/1", "marketer").json()
        assert shown["lost_to"] == {str(high["id"]): 20} and shown["total"] == 0
        assert api("GET", f"/campaigns/{high['id']}/periods/1", "marketer").json()["lost_to"] == {}
        page = api("GET", f"/campaigns/{low['id']}/report.html", "analyst")
        assert page.status_code == 200
        assert f"20 of your targeted customers went to campaign {high['id']} (high) (period 1)" in page.text
        assert "Customers shared with other campaigns" not in api(
            "GET", f"/campaigns/{high['id']}/report.html", "analyst").text
    finally:
        get_settings.cache_clear()
