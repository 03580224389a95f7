"""Model versions through real HTTP requests (SQLite and PostgreSQL): promote, roll back (to a period
or uniform), resume learning, the timeline — and what the next periods really send."""

import math
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import func, select

from campaigns.db import session_scope
from campaigns.models import ModelAction, Send
from campaigns.services import periods
from campaigns.services.versions import MANUAL_STAGES
from tests.factories import customers, small_campaign_payload

HOLDOUT = 0.2
PER_SEGMENT = 500
# Arms of the small campaign: tone (friendly, urgent) × offer (free_dessert, free_drink, two_for_one).
URGENT_FREE_DRINK = 4


def setup(api, **overrides) -> int:
    r = api("POST", "/customers", "marketer", json={"customers": customers(2 * PER_SEGMENT)})
    assert r.status_code == 200, r.text
    payload = small_campaign_payload(objective="click", holdout_share=HOLDOUT, **overrides)
    cid = api("POST", "/campaigns", "marketer", json=payload).json()["id"]
    assert api("POST", f"/campaigns/{cid}/start", "marketer").status_code == 200
    return cid


def run_period(api, cid: int) -> int:
    r = api("POST", f"/campaigns/{cid}/periods", "marketer")
    assert r.status_code == 202, r.text
    assert periods.run_period(r.json()["id"]) == "completed"  # in process: no worker runs in API tests
    return r.json()["number"]


def snapshots(api, cid: int, number: int) -> dict[str, dict]:
    r = api("GET", f"/campaigns/{cid}/allocations", "analyst")
    assert r.status_code == 200, r.text
    return {s["segment"]: s for s in r.json() if s["period_number"] == number}


def sends(cid: int, number: int, segment: str) -> list[Send]:
    from campaigns.repositories import customers as customer_repo
    from campaigns.repositories.campaigns import period_by_number

    with session_scope() as s:
        period_id = period_by_number(s, cid, number).id
        segment_id = customer_repo.segments_by_name(s)[segment]
        rows = s.execute(select(Send).where(Send.period_id == period_id, Send.segment_id == segment_id)).scalars()
        return list(rows)


def click_on_arm_zero() -> None:
    """Every send of arm 0 so far got a click, no other arm did: the bandit will favour arm 0."""
    with session_scope() as s:
        s.execute(Send.__table__.update().where(Send.__table__.c.arm == 0).values(
            clicks=1, first_click_at=Send.__table__.c.sent_at))
        # ... and the attribution window has closed: the other arms' silence is final, not pending
        s.execute(Send.__table__.update().values(sent_at=Send.__table__.c.sent_at - timedelta(days=8)))


def assert_holdout_share_kept(rows: list[Send]) -> None:
    n, held = len(rows), sum(r.arm == -1 for r in rows)
    sd = math.sqrt(n * HOLDOUT * (1 - HOLDOUT))
    assert n == PER_SEGMENT
    assert abs(held - n * HOLDOUT) < 4.5 * sd, (held, n)  # a 4.5-sigma binomial band


def action_count() -> int:
    with session_scope() as s:
        return s.execute(select(func.count()).select_from(ModelAction)).scalar_one()


def test_promote_sends_the_winner_to_the_whole_segment_and_keeps_the_holdout(api):
    cid = setup(api)
    assert run_period(api, cid) == 1
    r = api("POST", f"/campaigns/{cid}/segments/champions/promote", "marketer",
            json={"arm": URGENT_FREE_DRINK, "reason": "clear winner after 4 weeks"})
    assert r.status_code == 201, r.text
    [action] = r.json()
    assert (action["action"], action["segment"], action["arm"], action["variant_key"]) == (
        "promote", "champions", URGENT_FREE_DRINK, "tone=urgent|offer=free_drink")
    assert (action["key_name"], action["key_role"]) == ("test marketer", "marketer")

    assert run_period(api, cid) == 2
    promoted = sends(cid, 2, "champions")
    assert_holdout_share_kept(promoted)
    assert {r.arm for r in promoted if r.arm != -1} == {URGENT_FREE_DRINK}
    # the logged propensity is the real probability: the whole non-holdout share on one arm
    assert all(math.isclose(r.propensity, 1 - HOLDOUT) for r in promoted if r.arm != -1)

    snap = snapshots(api, cid, 2)
    champions, hibernating = snap["champions"], snap["hibernating"]
    assert champions["stage"] == "promoted"
    assert champions["reason"] == ("promoted arm 4 (tone=urgent|offer=free_drink) by test marketer (marketer): "
                                   "clear winner after 4 weeks")
    assert champions["weights"] == [1.0 if a == URGENT_FREE_DRINK else 0.0 for a in champions["arms"]]
    # the posterior is still computed: P(best) and the bandit's own weights are kept for diagnostics
    assert math.isclose(sum(champions["p_best"]), 1.0, rel_tol=1e-6)
    manual = champions["diagnostics"]["manual"]
    assert manual["mode"] == "promoted" and manual["by"] == "test marketer" and manual["role"] == "marketer"
    assert manual["bandit_stage"] not in MANUAL_STAGES and math.isclose(sum(manual["bandit_weights"]), 1.0)

    # the other segment keeps learning
    assert hibernating["stage"] not in MANUAL_STAGES and "manual" not in hibernating["diagnostics"]
    learning = sends(cid, 2, "hibernating")
    assert len({r.arm for r in learning if r.arm != -1}) > 1

    # the analyst's report shows the mode in the allocation over time
    report = api("GET", f"/campaigns/{cid}/report", "analyst").json()
    over_time = {s["segment"]: s["allocation_over_time"]["periods"] for s in report["segments"]}
    assert [p["stage"] for p in over_time["champions"]][-1] == "promoted"
    assert over_time["hibernating"][-1]["stage"] not in MANUAL_STAGES


def test_promote_by_variant_key_for_every_segment(api):
    cid = setup(api)
    r = api("POST", f"/campaigns/{cid}/segments/all/promote", "admin",
            json={"variant_key": "tone=friendly|offer=two_for_one", "reason": "board decision"})
    assert r.status_code == 201, r.text
    assert sorted((a["segment"], a["arm"]) for a in r.json()) == [("champions", 2), ("hibernating", 2)]
    run_period(api, cid)
    for segment in ("champions", "hibernating"):
        rows = sends(cid, 1, segment)
        assert_holdout_share_kept(rows)
        assert {r.arm for r in rows if r.arm != -1} == {2}


def test_rollback_uniform_and_resume(api):
    cid = setup(api)
    run_period(api, cid)
    click_on_arm_zero()
    run_period(api, cid)
    first, second = snapshots(api, cid, 1), snapshots(api, cid, 2)
    assert max(first["champions"]["weights"]) < 0.9  # no feedback yet: the bandit spreads its bets
    assert second["champions"]["weights"][0] > 0.9  # it learned: arm 0 gets every click

    r = api("POST", f"/campaigns/{cid}/segments/champions/rollback", "marketer",
            json={"to_period": 1, "reason": "period 2 learned from a broken tracking link"})
    assert r.status_code == 201, r.text
    r = api("POST", f"/campaigns/{cid}/segments/hibernating/rollback", "marketer",
            json={"to": "uniform", "reason": "start over"})
    assert r.status_code == 201, r.text
    click_on_arm_zero()
    run_period(api, cid)
    third = snapshots(api, cid, 3)
    assert third["champions"]["stage"] == "pinned"
    assert third["champions"]["arms"] == first["champions"]["arms"]
    assert third["champions"]["weights"] == pytest.approx(first["champions"]["weights"], abs=1e-12)
    assert third["champions"]["reason"].startswith("pinned to the weights of period 1 by test marketer (marketer)")
    assert third["hibernating"]["stage"] == "uniform"
    assert third["hibernating"]["weights"] == pytest.approx([1 / 6] * 6, abs=1e-12)
    # the bandit still had its opinion, kept beside the override
    assert third["hibernating"]["diagnostics"]["manual"]["bandit_weights"][0] > 0.9
    # and what was sent follows the pinned weights: the logged propensity is (1 - holdout) × weight
    pinned = dict(zip(first["champions"]["arms"], first["champions"]["weights"], strict=True))
    rows = sends(cid, 3, "champions")
    assert_holdout_share_kept(rows)
    assert all(math.isclose(r.propensity, (1 - HOLDOUT) * pinned[r.arm]) for r in rows if r.arm != -1)
    rows = sends(cid, 3, "hibernating")
    assert all(math.isclose(r.propensity, (1 - HOLDOUT) / 6) for r in rows if r.arm != -1)
    assert len({r.arm for r in rows if r.arm != -1}) == 6

    r = api("POST", f"/campaigns/{cid}/segments/all/resume", "marketer", json={"reason": "tracking fixed"})
    assert r.status_code == 201 and [a["action"] for a in r.json()] == ["resume", "resume"]
    run_period(api, cid)
    fourth = snapshots(api, cid, 4)
    for segment in ("champions", "hibernating"):
        snap = fourth[segment]
        assert snap["stage"] not in MANUAL_STAGES and "manual" not in snap["diagnostics"]
        assert snap["weights"][0] > 0.9  # the bandit's own allocation again
        assert np.isclose(sum(snap["weights"]), 1.0)


def test_the_timeline_lists_every_action_in_order_with_who_and_why(api):
    cid = setup(api)
    body = api("GET", f"/campaigns/{cid}/versions", "analyst").json()
    assert body["timeline"] == []
    assert [(s["segment"], s["mode"]) for s in body["segments"]] == [("champions", "learning"),
                                                                     ("hibernating", "learning")]
    run_period(api, cid)
    steps = [
        ("marketer", "champions/promote", {"arm": 1, "reason": "r1"}),
        ("admin", "hibernating/rollback", {"to_period": 1, "reason": "r2"}),
        ("marketer", "champions/rollback", {"to": "uniform", "reason": "r3"}),
        ("admin", "all/resume", {"reason": "r4"}),
        ("marketer", "hibernating/promote", {"arm": 5, "reason": "r5"}),
    ]
    for role, path, payload in steps:
        r = api("POST", f"/campaigns/{cid}/segments/{path}", role, json=payload)
        assert r.status_code == 201, r.text

    r = api("GET", f"/campaigns/{cid}/versions", "marketer")
    assert r.status_code == 200
    body = api("GET", f"/campaigns/{cid}/versions", "analyst").json()
    timeline = body["timeline"]
    assert [(a["key_name"], a["key_role"], a["action"], a["segment"], a["reason"]) for a in timeline] == [
        ("test marketer", "marketer", "promote", "champions", "r1"),
        ("test admin", "admin", "rollback", "hibernating", "r2"),
        ("test marketer", "marketer", "uniform", "champions", "r3"),
        ("test admin", "admin", "resume", "champions", "r4"),
        ("test admin", "admin", "resume", "hibernating", "r4"),
        ("test marketer", "marketer", "promote", "hibernating", "r5"),
    ]
    assert [a["detail"] for a in timeline] == [
        "promoted arm 1 (tone=friendly|offer=free_drink)", "pinned to the weights of period 1",
        "uniform over the eligible variants", "resumed learning", "resumed learning",
        "promoted arm 5 (tone=urgent|offer=two_for_one)",
    ]
    times = [a["created_at"] for a in timeline]
    assert times == sorted(times) and len({a["id"] for a in timeline}) == 6
    modes = {s["segment"]: s for s in body["segments"]}
    assert modes["champions"]["mode"] == "learning" and modes["champions"]["action_id"] == timeline[3]["id"]
    assert modes["hibernating"]["mode"] == "promoted" and modes["hibernating"]["arm"] == 5
    assert modes["hibernating"]["variant_key"] == "tone=urgent|offer=two_for_one"
    # the analyst's report carries the same timeline, as JSON and on the HTML page
    report = api("GET", f"/campaigns/{cid}/report", "analyst").json()
    assert [a["id"] for a in report["versions"]["timeline"]] == [a["id"] for a in timeline]
    assert {s["segment"]: s["mode"] for s in report["versions"]["segments"]} == {
        "champions": "learning", "hibernating": "promoted"}
    page = api("GET", f"/campaigns/{cid}/report.html", "analyst").text
    assert "promoted arm 5 (tone=urgent|offer=two_for_one)" in page and "r5" in page
    assert modes["hibernating"]["since"] == timeline[5]["created_at"]

    api("POST", f"/campaigns/{cid}/segments/champions/rollback", "marketer", json={"to_period": 1, "reason": "x"})
    modes = {s["segment"]: s for s in api("GET", f"/campaigns/{cid}/versions", "analyst").json()["segments"]}
    assert (modes["champions"]["mode"], modes["champions"]["pinned_period"]) == ("pinned", 1)


def errors_of(r) -> list[tuple[str, str]]:
    body = r.json()
    assert body["error"] == "invalid_input", body
    return [(d["loc"], d["msg"]) for d in body["detail"]]


def test_bad_input_is_refused_and_writes_nothing(api):
    rule = {"when": {"offer": "two_for_one"}, "segments": ["champions"]}  # arms 2 and 5 in champions
    cid = setup(api, exclusions=[rule])
    run_period(api, cid)
    queued = api("POST", f"/campaigns/{cid}/periods", "marketer")  # started, never planned
    assert queued.status_code == 202
    base = f"/campaigns/{cid}/segments"

    def post(path, payload, role="marketer"):
        return api("POST", f"{base}/{path}", role, json=payload)

    cases = [
        ("champions/promote", {"arm": 6, "reason": "x"}, "arm", "has no arm 6 (arms 0 to 5)"),
        ("champions/promote", {"arm": -1, "reason": "x"}, "arm", "greater than or equal to 0"),
        ("champions/promote", {"variant_key": "tone=sarcastic", "reason": "x"}, "variant_key", "no variant"),
        ("champions/promote", {"arm": 2, "reason": "x"}, "arm", "excluded for segment 'champions'"),
        ("champions/promote", {"variant_key": "tone=urgent|offer=two_for_one", "reason": "x"}, "variant_key",
         "arm 5 (tone=urgent|offer=two_for_one) is excluded for segment 'champions'"),
        ("all/promote", {"arm": 5, "reason": "x"}, "arm", "excluded for segment 'champions'"),
        ("champions/promote", {"arm": 1, "variant_key": "tone=friendly|offer=free_drink", "reason": "x"}, "arm",
         "exactly one"),
        ("champions/promote", {"reason": "x"}, "arm", "exactly one"),
        ("champions/promote", {"arm": 1}, "reason", "Field required"),
        ("champions/promote", {"arm": 1, "reason": "   "}, "reason", "at least 1 character"),
        ("champions/promote", {"arm": 1, "reason": "x", "by": "someone else"}, "by", "Extra inputs"),
        ("champions/rollback", {"to_period": 9, "reason": "x"}, "to_period", f"campaign {cid} has no period 9"),
        ("champions/rollback", {"to_period": 0, "reason": "x"}, "to_period", "greater than or equal to 1"),
        ("champions/rollback", {"to_period": 2, "reason": "x"}, "to_period", "has not been planned yet"),
        ("champions/rollback", {"to": "random", "reason": "x"}, "to", "'uniform'"),
        ("champions/rollback", {"to_period": 1, "to": "uniform", "reason": "x"}, "to_period", "exactly one"),
        ("champions/rollback", {"reason": "x"}, "to_period", "exactly one"),
        ("champions/rollback", {"to_period": 1}, "reason", "Field required"),
        ("all/resume", {}, "reason", "Field required"),
    ]
    wrong = []
    for path, payload, loc, msg in cases:
        r = post(path, payload)
        if r.status_code != 422 or not any(lc == loc and msg in m for lc, m in errors_of(r)):
            wrong.append((path, payload, r.status_code, r.text))
    assert wrong == []
    assert post("hibernating/promote", {"arm": 2, "reason": "allowed here"}).status_code == 201  # not excluded
    assert action_count() == 1

    # unknown campaign or segment: 404
    r = api("POST", "/campaigns/999999/segments/champions/promote", "marketer", json={"arm": 1, "reason": "x"})
    assert r.status_code == 404 and r.json() == {"error": "not_found", "detail": "no campaign with id 999999"}
    assert api("GET", "/campaigns/999999/versions", "analyst").status_code == 404
    for segment in ("whales", "loyal_regulars"):  # unknown, and known but not targeted by the campaign
        r = post(f"{segment}/resume", {"reason": "x"})
        assert r.status_code == 404 and f"segment named '{segment}'" in r.json()["detail"]

    # wrong roles: analysts read the timeline but do not act; ingest keys do neither
    for role in ("analyst", "ingest"):
        r = post("champions/promote", {"arm": 1, "reason": "x"}, role=role)
        assert r.status_code == 403 and f"role '{role}'" in r.json()["detail"]
    assert api("GET", f"/campaigns/{cid}/versions", "ingest").status_code == 403
    assert api("GET", f"/campaigns/{cid}/versions", "analyst").status_code == 200
    assert action_count() == 1

    # a completed campaign's allocation can no longer change: 409, even for a valid action
    assert api("POST", f"/campaigns/{cid}/complete", "marketer").status_code == 200
    for path, payload in [("champions/promote", {"arm": 1, "reason": "x"}),
                          ("champions/rollback", {"to_period": 1, "reason": "x"}),
                          ("all/rollback", {"to": "uniform", "reason": "x"}),
                          ("champions/resume", {"reason": "x"})]:
        r = post(path, payload)
        assert r.status_code == 409 and "completed" in r.json()["detail"], (path, r.text)
    assert action_count() == 1
    assert len(api("GET", f"/campaigns/{cid}/versions", "analyst").json()["timeline"]) == 1
