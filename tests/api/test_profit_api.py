"""The profit objective through HTTP: a campaign with economics is stored and shown; every bad
economics is a 422 naming the field, and writes nothing."""

import json

from sqlalchemy import func, select

from campaigns.db import session_scope
from campaigns.models import Campaign
from campaigns.settings import PROJECT_ROOT
from tests.factories import small_campaign_payload

ECONOMICS = {
    "margin": 0.65,
    "unsubscribe_cost": 12.0,
    "level_costs": {"offer": {"two_for_one": {"share": 0.5}, "free_dessert": {"fixed": 4.5}}},
}


def profit_payload(**overrides) -> dict:
    return small_campaign_payload(**{"objective": "profit", "economics": ECONOMICS, **overrides})


def campaign_count() -> int:
    with session_scope() as s:
        return s.execute(select(func.count()).select_from(Campaign)).scalar_one()


def test_profit_campaign_stores_its_economics_with_defaults_filled_in(api):
    r = api("POST", "/campaigns", "marketer", json=profit_payload())
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["objective"] == "profit" and body["model"] == "auto"
    assert body["economics"] == {
        "margin": 0.65, "unsubscribe_cost": 12.0,
        "level_costs": {"offer": {"two_for_one": {"share": 0.5, "fixed": 0.0},
                                  "free_dessert": {"share": 0.0, "fixed": 4.5}}}}
    assert api("GET", f"/campaigns/{body['id']}", "marketer").json()["economics"] == body["economics"]
    # other objectives carry none
    other = api("POST", "/campaigns", "marketer", json=small_campaign_payload()).json()
    assert other["economics"] is None


def test_the_manuals_profit_example_is_accepted(api):
    body = json.loads((PROJECT_ROOT / "docs" / "examples" / "profit-campaign.json").read_text(encoding="utf-8"))
    r = api("POST", "/campaigns", "marketer", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["variant_count"] == 12
    assert r.json()["economics"]["level_costs"]["offer"]["free_dessert"] == {"share": 0.0, "fixed": 4.5}


def test_a_draft_takes_new_economics_and_checks_them(api):
    cid = api("POST", "/campaigns", "marketer", json=profit_payload()).json()["id"]
    r = api("PATCH", f"/campaigns/{cid}", "marketer", json={"economics": {"margin": 0.5}})
    assert r.status_code == 200, r.text
    assert r.json()["economics"] == {"margin": 0.5, "unsubscribe_cost": 0.0, "level_costs": {}}
    r = api("PATCH", f"/campaigns/{cid}", "marketer",
            json={"economics": {"margin": 0.5, "level_costs": {"tone": {"shouty": {"fixed": 1}}}}})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == "economics.level_costs.tone.shouty"
    assert api("GET", f"/campaigns/{cid}", "marketer").json()["economics"]["margin"] == 0.5
    # a campaign of another objective refuses economics
    other = api("POST", "/campaigns", "marketer", json=small_campaign_payload()).json()["id"]
    r = api("PATCH", f"/campaigns/{other}", "marketer", json={"economics": {"margin": 0.5}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "economics"


def _economics(**changes) -> dict:
    return {**ECONOMICS, **changes}


BAD = [
    ({"economics": _economics(margin=1.5)}, "economics.margin", "less than or equal to 1"),
    ({"economics": _economics(margin=-0.1)}, "economics.margin", "greater than or equal to 0"),
    ({"economics": _economics(margin="lots")}, "economics.margin", "number"),
    ({"economics": _economics(margin=True)}, "economics.margin", "number"),
    ({"economics": {"unsubscribe_cost": 3}}, "economics.margin", "required"),
    ({"economics": _economics(unsubscribe_cost=-1)}, "economics.unsubscribe_cost", "greater than or equal to 0"),
    ({"economics": _economics(level_costs={"offer": {"free_drink": {"fixed": -2}}})},
     "economics.level_costs.offer.free_drink.fixed", "greater than or equal to 0"),
    ({"economics": _economics(level_costs={"offer": {"free_drink": {"share": 1.2}}})},
     "economics.level_costs.offer.free_drink.share", "less than or equal to 1"),
    ({"economics": _economics(level_costs={"offer": {"free_drink": {"price": 2}}})},
     "economics.level_costs.offer.free_drink.price", "extra inputs"),
    ({"economics": _economics(level_costs={"colour": {"red": {"fixed": 1}}})},
     "economics.level_costs.colour", "unknown factor"),
    ({"economics": _economics(level_costs={"offer": {"free_cake": {"fixed": 1}}})},
     "economics.level_costs.offer.free_cake", "unknown level"),
    ({"economics": _economics(level_costs={"offer": {"free_drink": {"share": 0.7}},
                                           "tone": {"urgent": {"share": 0.6}}})},
     "economics.level_costs", "sum above 1"),
    ({"economics": None}, "economics", "needs economics"),
    ({"objective": "revenue"}, "economics", "only used by the profit objective"),
    ({"model": "structured"}, "model", "does not support the profit objective"),
]


def test_bad_economics_get_422_naming_the_field_and_write_nothing(api):
    before = campaign_count()
    for override, loc, message in BAD:  # one app for all the cases: each is a request
        r = api("POST", "/campaigns", "marketer", json=profit_payload(**override))
        assert r.status_code == 422, (override, r.text)
        body = r.json()
        assert body["error"] == "invalid_input"
        assert any(d["loc"] == loc and message.lower() in d["msg"].lower() for d in body["detail"]), (override, body)
    assert campaign_count() == before
