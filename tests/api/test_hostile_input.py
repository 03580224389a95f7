"""Hostile input against a running API: a template whose filter is quadratic, big invalid bodies.
Each gets a clear 422 and the API keeps answering."""

import json
import threading

import httpx

from campaigns.models import Campaign
from campaigns.schemas import MAX_LISTED_PROBLEMS
from tests.api.test_body_limits import count
from tests.api.test_idempotency import live_server  # noqa: F401 (a fixture)
from tests.factories import small_campaign_payload

# jinja's urlize scans each word with a regex whose time grows with the square of its length, in one
# C call that holds the GIL: unchecked, this one expression took minutes.
URLIZE_BOMB = "{{ (')'*58000 ~ 'x.')|urlize }}"


def hostile_campaign() -> dict:
    payload = small_campaign_payload(name="hostile")
    payload["template"] = {**payload["template"], "html": payload["template"]["html"] + URLIZE_BOMB}
    return payload


def test_a_quadratic_template_is_refused_while_health_keeps_answering(live_server):  # noqa: F811
    url, headers = live_server["url"], {"X-API-Key": live_server["keys"]["marketer"]}
    answers: list[httpx.Response] = []

    def save():
        for _ in range(3):
            answers.append(httpx.post(url + "/campaigns", json=hostile_campaign(), headers=headers, timeout=120))

    saving = threading.Thread(target=save)
    saving.start()
    health = []
    while saving.is_alive() or not health:
        # a stalled event loop would make this time out (and the test fail), not merely answer late
        health.append(httpx.get(url + "/health", timeout=10).status_code)
    saving.join()
    assert set(health) == {200}
    assert [r.status_code for r in answers] == [422] * 3, [r.text for r in answers]
    [problem] = answers[0].json()["detail"]
    assert problem["loc"] == "template.html" and "urlize" in problem["msg"], problem
    assert count(Campaign) == 0


def bad_customer(i: int) -> dict:
    return {"external_id": "", "email": f"bad{i}", "attributes": {"a": [1], "b": {"x": 1}}, "consent": "maybe"}


def test_a_10_mb_invalid_body_gets_the_first_problems_and_a_count_of_the_rest(api):
    items = [bad_customer(i) for i in range(100_000)]
    body = json.dumps({"customers": items}).encode()
    assert len(body) > 10_000_000
    r = api("POST", "/customers", "marketer", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert len(detail) == MAX_LISTED_PROBLEMS + 1 and len(r.content) < 20_000
    assert detail[0]["loc"].startswith("customers[0].")
    indices = [int(d["loc"].removeprefix("customers[").split("]")[0]) for d in detail[:-1]]
    assert indices == sorted(indices)  # item after item, in order
    per_item = sum(1 for d in detail if d["loc"].startswith("customers[0]."))
    more = 100_000 * per_item - MAX_LISTED_PROBLEMS
    assert detail[-1] == {"loc": "customers", "msg": f"and {more:,} more problems (the first 50 are listed)"}


def test_a_few_problems_are_all_listed_and_good_items_still_load(api):
    good = {"external_id": "ok1", "email": "ok1@example.com", "segment": "champions"}
    r = api("POST", "/customers", "marketer", json={"customers": [good, {**good, "email": "x"}, {"email": 3}]})
    assert r.status_code == 422
    locs = [d["loc"] for d in r.json()["detail"]]
    assert locs == ["customers[1].email", "customers[2].external_id", "customers[2].email"], locs
    r = api("POST", "/customers", "marketer", json={"customers": [good]})
    assert r.status_code == 200 and r.json()["inserted"] == 1, r.text
    r = api("POST", "/customers", "marketer", json={"customers": []})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "customers"
