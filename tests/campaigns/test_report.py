"""The lift report against real databases (SQLite and PostgreSQL): every figure is recomputed here
from the ledger row by row and must equal what the report built from SQL aggregates."""

import json
import math
from collections import defaultdict
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select, update

from bandit.offpolicy import LoggedData, ips, uniform_policy
from campaigns.db import session_scope
from campaigns.models import AllocationSnapshot, Event, Send, SendPeriod, utcnow
from campaigns.repositories import reports as report_repo
from campaigns.services import events, periods, reports
from tests.campaigns.test_periods import new_period, setup_campaign

Z = 1.959963984540054


def run_periods(cid: int, n: int) -> list[int]:
    """n periods, each with a fixed seed (a period's own is random): the report's tests check
    statistics, and a fixed draw keeps them from failing at their own false-positive rate (the
    sample-ratio check flags p < 0.001, in four cells)."""
    ids = []
    for k in range(n):
        pid = new_period(cid)
        with session_scope() as s:
            s.get(SendPeriod, pid).seed = 7_000 + k
        periods.run_period(pid)
        ids.append(pid)
    return ids


def all_sends(cid: int) -> list[Send]:
    with session_scope() as s:
        return list(s.execute(select(Send).where(Send.campaign_id == cid).order_by(Send.id)).scalars())


def fold(batch: list[dict]) -> None:
    with session_scope() as s:
        events.process_events(s, batch)


def feedback(sends: list[Send], seed: int) -> None:
    """Clicks on ~30% of sends (more for higher arms), conversions with revenue on ~40% of those;
    the holdout does worse. Deterministic given the seed."""
    rng = np.random.default_rng(seed)
    batch = []
    for s in sends:
        p = 0.15 if s.arm < 0 else 0.2 + 0.04 * s.arm
        if rng.random() < p:
            batch.append({"event_id": f"k{s.id}", "type": "click", "send_id": s.id, "occurred_at": None})
            if rng.random() < 0.4:
                batch.append({"event_id": f"v{s.id}", "type": "conversion", "send_id": s.id,
                              "revenue": float(round(rng.gamma(2.0, 15.0), 2)), "occurred_at": None})
    fold(batch)


def report(cid: int) -> dict:
    with session_scope() as s:
        return reports.lift_report(s, cid)


def reward(s: Send, metric: str) -> float:
    return {"click_rate": float(s.first_click_at is not None),
            "conversion_rate": float(s.first_conversion_at is not None),
            "revenue_per_send": s.revenue}[metric]


def mean_var(values: list[float], metric: str) -> tuple[float, float]:
    n = len(values)
    m = sum(values) / n
    var = m * (1 - m) if metric != "revenue_per_send" else sum((v - m) ** 2 for v in values) / (n - 1)
    return m, var / n


@pytest.fixture
def campaign(database_url, redis_server):
    cid = setup_campaign(600, holdout_share=0.2)
    first, second = run_periods(cid, 2)
    feedback(all_sends(cid), seed=1)
    return cid


def test_lift_equals_a_per_send_recomputation(campaign):
    rep = report(campaign)
    sends = [s for s in all_sends(campaign) if s.status == "sent"]
    assert rep["overall"]["control"]["sends"] + rep["overall"]["bandit"]["sends"] == len(sends) == 1200
    groups = {"overall": sends}
    for seg in rep["segments"]:
        groups[seg["segment"]] = [s for s in sends if s.segment_id == seg["segment_id"]]
    blocks = {"overall": rep["overall"], **{seg["segment"]: seg for seg in rep["segments"]}}
    for name, rows in groups.items():
        for metric in reports.METRICS:
            control = [reward(s, metric) for s in rows if s.arm == -1]
            treated = [reward(s, metric) for s in rows if s.arm >= 0]
            c, vc = mean_var(control, metric)
            b, vb = mean_var(treated, metric)
            got = blocks[name]["lift"][metric]
            se = math.sqrt(vc + vb)
            assert got["control"] == pytest.approx(c) and got["bandit"] == pytest.approx(b)
            assert got["absolute_lift"] == pytest.approx(b - c)
            assert got["absolute_lift_ci95"] == pytest.approx([b - c - Z * se, b - c + Z * se])
            assert got["relative_lift"] == pytest.approx(b / c - 1)
            # Fieller: the ratios r with (b - r c)^2 <= Z^2 (vb + r^2 vc), as roots of the quadratic
            lo, hi = got["absolute_lift_ci95"]
            if c * c <= Z * Z * vc:  # the control's rate is not told apart from 0: a ratio has no bounds
                assert got["relative_lift_ci95"] == [None, None]
            else:
                roots = sorted(np.roots([c * c - Z * Z * vc, -2 * b * c, b * b - Z * Z * vb]).real)
                assert got["relative_lift_ci95"] == pytest.approx([roots[0] - 1, roots[1] - 1])
                assert (lo > 0 or hi < 0) == (not got["relative_lift_ci95"][0] <= 0 <= got["relative_lift_ci95"][1])
            cs = got["absolute_lift_anytime_ci95"]
            assert cs[0] < lo and cs[1] > hi  # the anytime-valid interval is wider than the fixed one
            assert got["prob_lift_positive"] == pytest.approx(0.5 * (1 + math.erf((b - c) / se / math.sqrt(2))))
            inc = reports.INCREMENTAL[metric]
            assert got[inc] == pytest.approx((b - c) * len(treated))
            n_b = len(treated)
            assert got[f"{inc}_ci95"] == pytest.approx([(b - c - Z * se) * n_b, (b - c + Z * se) * n_b])
    # The simulated bandit arms click more than the holdout: the report sees a positive click lift.
    assert rep["overall"]["lift"]["click_rate"]["absolute_lift"] > 0


def test_learning_curve_and_off_policy_equal_the_per_send_formulas(campaign):
    rep = report(campaign)
    sends = [s for s in all_sends(campaign) if s.status == "sent" and s.arm >= 0]
    with session_scope() as s:
        snaps = {(sn.version, sn.segment_id): sn for sn in s.execute(select(AllocationSnapshot)).scalars()}
        number = {p.id: p.number for p in report_repo.campaign_periods(s, campaign)}
    seg_index = {seg["segment_id"]: i for i, seg in enumerate(rep["segments"])}
    k = len(rep["segments"][0]["leaderboard"]["click_rate"])
    for metric in reports.METRICS:
        # learning curve: sum over the bandit's sends of r x (1/K) / w, w = propensity / (1 - holdout share)
        for row in rep["learning_curve"][metric]:
            upto = [s for s in sends if number[s.period_id] <= row["period"]]
            est = sum(reward(s, metric) * (1 / k) / (s.propensity / (1 - snaps[(number[s.period_id], s.segment_id)]
                                                                       .holdout_share)) for s in upto)
            assert row["cumulative_uniform_ips"] == pytest.approx(est)
            assert row["cumulative_bandit"] == pytest.approx(sum(reward(s, metric) for s in upto))
            assert row["cumulative_bandit_sends"] == len(upto)
        # off-policy from grouped SQL rows == the estimator on per-send arrays
        per_send = LoggedData.from_sends(
            [seg_index[s.segment_id] for s in sends], [s.arm for s in sends],
            [s.propensity / (1 - snaps[(number[s.period_id], s.segment_id)].holdout_share) for s in sends],
            [reward(s, metric) for s in sends])
        expected = ips(per_send, uniform_policy(np.ones((len(seg_index), k), dtype=bool)))
        got = rep["off_policy"]["policies"]["uniform"]["overall"][metric]["ips"]
        assert got["value"] == pytest.approx(expected.value)
        assert got["std_error"] == pytest.approx(expected.std_error)
        for est in ("ips", "snips", "dr"):
            lo, hi = rep["off_policy"]["policies"]["uniform"]["overall"][metric][est]["ci95"]
            assert lo <= rep["off_policy"]["policies"]["uniform"]["overall"][metric][est]["value"] <= hi
    assert set(rep["off_policy"]["policies"]) == {"uniform", "leader"}
    gap = rep["off_policy"]["policies"]["leader"]["support_gap"]
    assert 0.0 <= gap <= 1.0


def test_leaderboard_factor_effects_and_allocation_over_time(campaign):
    rep = report(campaign)
    sends = [s for s in all_sends(campaign) if s.status == "sent"]
    with session_scope() as s:
        snaps = list(s.execute(select(AllocationSnapshot).order_by(AllocationSnapshot.version)).scalars())
    for seg in rep["segments"]:
        latest = [sn for sn in snaps if sn.segment_id == seg["segment_id"]][-1]
        weights = dict(zip(latest.arms, latest.weights, strict=True))
        for metric in reports.METRICS:
            board = seg["leaderboard"][metric]
            assert sorted(r["arm"] for r in board) == latest.arms
            assert sum(r["p_best"] for r in board) == pytest.approx(1.0)
            means = [r["posterior_mean"] for r in board]
            assert means == sorted(means, reverse=True)
            for r in board:
                mine = [x for x in sends if x.segment_id == seg["segment_id"] and x.arm == r["arm"]]
                assert r["sends"] == len(mine)
                assert r["current_weight"] == pytest.approx(weights[r["arm"]])
                assert r["posterior_ci95"][0] <= r["posterior_mean"] <= r["posterior_ci95"][1]
                assert r["expected_loss"] >= 0
            effects = seg["factor_effects"][metric]
            for factor in ("tone", "offer"):
                levels = [e for e in effects if e["factor"] == factor]
                assert sum(e["sends"] for e in levels) == sum(1 for x in sends if x.segment_id == seg["segment_id"]
                                                              and x.arm >= 0)
                assert sum(e["p_best_level"] for e in levels) == pytest.approx(1.0)
            for e in effects:
                mine = [x for x in sends if x.segment_id == seg["segment_id"] and x.arm >= 0
                        and rep_params(seg, x.arm)[e["factor"]] == e["level"]]
                assert e["observed"] == pytest.approx(sum(reward(x, metric) for x in mine) / len(mine))
        over = seg["allocation_over_time"]
        assert [p["period"] for p in over["periods"]] == [1, 2]
        mine = [sn for sn in snaps if sn.segment_id == seg["segment_id"]]
        for row, sn in zip(over["periods"], mine, strict=True):
            w = dict(zip(sn.arms, sn.weights, strict=True))
            assert row["weights"] == pytest.approx([w[a["arm"]] for a in over["arms"]])
            assert sum(row["weights"]) + row["other"] == pytest.approx(1.0)


def rep_params(seg: dict, arm: int) -> dict:
    return next(r["params"] for r in seg["leaderboard"]["click_rate"] if r["arm"] == arm)


def test_sample_ratio_mismatch_is_flagged_where_the_holdout_was_broken(database_url, redis_server):
    cid = setup_campaign(2_000, holdout_share=0.2)
    first, second = run_periods(cid, 2)
    rep = report(cid)
    assert rep["health"]["srm_flagged"] == 0 and len(rep["health"]["srm"]) == 4
    # A bug moves half of one segment's holdout of period 2 into arm 0.
    target = rep["segments"][0]["segment_id"]
    with session_scope() as s:
        ids = s.execute(select(Send.id).where(Send.period_id == second, Send.segment_id == target,
                                              Send.arm == -1)).scalars().all()
        s.execute(update(Send).where(Send.id.in_(ids[: len(ids) // 2])).values(arm=0))
    flagged = [r for r in report(cid)["health"]["srm"] if r["flagged"]]
    assert [(r["period"], r["segment"]) for r in flagged] == [(2, rep["segments"][0]["segment"])]
    assert flagged[0]["assigned"]["p_value"] < 0.001
    assert flagged[0]["assigned"]["total"] == 1_000 and flagged[0]["assigned"]["expected_holdout"] == 200


def test_late_data_bot_unattributed_and_other_events_are_counted(database_url, redis_server):
    cid = setup_campaign(200)
    first, second = run_periods(cid, 2)
    p1 = [s for s in all_sends(cid) if s.period_id == first]
    with session_scope() as s:
        # period 2 was allocated an hour after period 1's delivery (a tight cadence, not seconds later)
        s.execute(update(AllocationSnapshot).where(AllocationSnapshot.version == 2)
                  .values(created_at=max(x.sent_at for x in p1) + timedelta(hours=1)))
        next_snapshot = {sn.segment_id: sn.created_at for sn in s.execute(
            select(AllocationSnapshot).where(AllocationSnapshot.version == 2)).scalars()}
    a, b, c = p1[0], p1[1], p1[2]
    fold([
        # in time: before period 2 was allocated
        {"event_id": "on-time", "type": "click", "send_id": a.id,
         "occurred_at": (a.sent_at + timedelta(seconds=30)).isoformat()},
        # after period 2's snapshot of its segment: that allocation could not use it
        {"event_id": "after-next", "type": "conversion", "send_id": b.id, "revenue": 5.0,
         "occurred_at": (next_snapshot[b.segment_id] + timedelta(minutes=1)).isoformat()},
        {"event_id": "window", "type": "conversion", "send_id": c.id, "revenue": 1.0,
         "occurred_at": (c.sent_at + timedelta(seconds=40)).isoformat()},
        # matches no send: unattributed
        {"event_id": "stranger", "type": "conversion", "campaign_id": cid, "customer_external_id": "nobody",
         "revenue": 2.0, "occurred_at": None},
    ])
    with session_scope() as s:
        # received 8 days after its send, past the 7-day attribution window
        s.execute(update(Event).where(Event.event_id == "window").values(received_at=c.sent_at + timedelta(days=8)))
        # rows the feedback ingestion writes for bots, unsubscribes and complaints
        now = utcnow()
        s.execute(Event.__table__.insert(), [
            {"event_id": f"bot-{i}", "type": "click", "status": "excluded", "campaign_id": cid, "send_id": a.id,
             "revenue": 0.0, "occurred_at": now, "received_at": now} for i in range(3)] + [
            {"event_id": "u-1", "type": "unsubscribe", "status": "applied", "campaign_id": cid, "send_id": None,
             "revenue": 0.0, "occurred_at": now, "received_at": now},
            {"event_id": "x-1", "type": "complaint", "status": "applied", "campaign_id": cid, "send_id": None,
             "revenue": 0.0, "occurred_at": now, "received_at": now}])
    health = report(cid)["health"]
    late = health["late_data"]
    assert (late["events"], late["after_next_allocation"], late["received_after_window"], late["late"]) == (3, 1, 1, 2)
    assert late["share"] == pytest.approx(2 / 3)
    assert late["periods"] == [{"period": 1, "events": 3, "after_next_allocation": 1, "received_after_window": 1,
                                "late": 2}]
    ev = health["events"]
    assert (ev["excluded_as_bots"], ev["unattributed"], ev["unsubscribes"], ev["complaints"]) == (3, 1, 1, 1)
    assert ev["applied"] == 5
    assert {"type": "click", "status": "excluded", "events": 3} in ev["by_type_status"]


def test_drift_alerts_the_arm_whose_rate_jumped(database_url, redis_server):
    cid = setup_campaign(1_200, holdout_share=0.2, burn_in_min_sends=100_000)  # equal weights throughout
    ids = run_periods(cid, 3)
    with session_scope() as s:
        # arm 2 suddenly converts everyone in the latest period; nothing else converts at all
        s.execute(update(Send).where(Send.period_id == ids[-1], Send.arm == 2)
                  .values(conversions=1, first_conversion_at=utcnow(), first_click_at=utcnow(), clicks=1))
    drift = report(cid)["health"]["drift"]
    assert drift["metric"] == "conversion_rate"
    assert drift["tested"] == 14  # control + 6 arms with >= 30 sends in both windows, two segments
    assert {(a["arm"], a["latest"], a["earlier"]) for a in drift["alerts"]} == {(2, 1.0, 0.0)}
    assert len(drift["alerts"]) == 2 and all(a["bonferroni"] and a["feedback_window_open"] for a in drift["alerts"])


def test_a_campaign_without_periods_reports_empty_sections(database_url, redis_server):
    cid = setup_campaign(10)
    rep = report(cid)
    json.dumps(rep, allow_nan=False)  # what the API sends: no NaN or infinity anywhere
    assert rep["periods"] == 0 and rep["overall"]["bandit"]["sends"] == 0
    assert rep["overall"]["lift"]["click_rate"]["absolute_lift"] is None
    assert rep["health"]["srm"] == [] and rep["health"]["late_data"]["events"] == 0
    assert rep["learning_curve"]["conversion_rate"] == []
    html = reports.render_html(rep)
    assert "<svg" in html and "No allocation yet" in html
    rows = [r for r in reports.csv_rows(rep) if r[1] in ("control", "bandit", "arm")]
    assert len(rows) == 3 * 2 * 3 + 2 * 6 * 3  # (overall + 2 segments) x sides x metrics + arms x metrics


def test_without_a_holdout_there_is_no_lift_but_the_rest_of_the_report(database_url, redis_server):
    cid = setup_campaign(300, holdout_share=0.0)
    run_periods(cid, 2)
    feedback(all_sends(cid), seed=4)
    rep = report(cid)
    json.dumps(rep, allow_nan=False)
    assert rep["overall"]["control"]["sends"] == 0 and rep["overall"]["bandit"]["sends"] == 600
    assert all(lf["absolute_lift"] is None and lf["prob_lift_positive"] is None
               for lf in rep["overall"]["lift"].values())
    assert all(r["assigned"]["p_value"] is None and not r["flagged"] for r in rep["health"]["srm"])
    curve = rep["learning_curve"]["click_rate"]
    assert [r["period"] for r in curve] == [1, 2] and curve[-1]["cumulative_control_rate_x_sends"] is None
    assert rep["off_policy"]["policies"]["uniform"]["overall"]["click_rate"]["ips"]["value"] > 0
    html = reports.render_html(rep)
    assert html.count('class="lift-row"') == 9 and html.count(">n/a<") == 9


def test_the_ledger_is_read_as_aggregates_not_rows(campaign):
    with session_scope() as s:
        period_ids = [p.id for p in report_repo.campaign_periods(s, campaign)]
        groups = report_repo.ledger_groups(s, period_ids)
    # (2 periods) x (2 segments) x (6 arms + holdout) x (one status here): at most 28 rows for 1,200 sends
    assert len(groups) <= 2 * 2 * 7
    assert sum(g.sends for g in groups) == 1_200
    by_cell = defaultdict(set)
    for g in groups:
        by_cell[(g.period_id, g.segment_id, g.arm)].add(g.propensity)
    assert all(len(p) == 1 for p in by_cell.values())  # one propensity per (period, segment, arm)


def test_ipw_arm_and_level_means_equal_the_per_send_hajek_estimate(campaign):
    rep = report(campaign)
    sends = [s for s in all_sends(campaign) if s.status == "sent" and s.arm >= 0]
    with session_scope() as s:
        share = {(sn.version, sn.segment_id): sn.holdout_share for sn in s.execute(
            select(AllocationSnapshot).where(AllocationSnapshot.campaign_id == campaign)).scalars()}
        number = {p.id: p.number for p in s.execute(select(SendPeriod).where(
            SendPeriod.campaign_id == campaign)).scalars()}
    checked = 0
    for seg in rep["segments"]:
        mine = [x for x in sends if x.segment_id == seg["segment_id"]]
        w = {x.id: (1 - share[(number[x.period_id], x.segment_id)]) / x.propensity for x in mine}
        for metric in reports.METRICS:
            for row in seg["leaderboard"][metric]:
                arm = [x for x in mine if x.arm == row["arm"]]
                if not arm:
                    assert row["ipw"] is None
                    continue
                est = sum(w[x.id] * reward(x, metric) for x in arm) / sum(w[x.id] for x in arm)
                assert row["ipw"] == pytest.approx(est)
                assert row["ipw_ci95"][0] <= est <= row["ipw_ci95"][1]
                checked += 1
            for fe in seg["factor_effects"][metric]:
                level = [x for x in mine if x.arm in {a["arm"] for a in seg["arms"]
                                                      if a["params"][fe["factor"]] == fe["level"]}]
                if level:
                    est = sum(w[x.id] * reward(x, metric) for x in level) / sum(w[x.id] for x in level)
                    assert fe["ipw"] == pytest.approx(est)
    assert checked >= 2 * 3 * 5


def test_variant_labels_come_from_factor_levels(campaign):
    rep = report(campaign)
    row = rep["segments"][0]["leaderboard"]["click_rate"][0]
    factors = list(rep["segments"][0]["arms"][0]["params"])
    assert row["label"] == " · ".join(str(row["params"][f]).replace("_", " ") for f in factors)
    assert "=" not in row["label"] and "|" not in row["label"]


def test_everything_that_happened_is_in_the_report(database_url, redis_server):
    cid = setup_campaign(200)
    (pid,) = run_periods(cid, 1)
    ids = [s.id for s in all_sends(cid)]
    errors = {ids[0]: "render failed: UndefinedError: 'first_name' is undefined",
              ids[1]: "render failed: UndefinedError: 'city' is undefined",
              ids[2]: "suppressed: customer is unsubscribed",
              ids[3]: "550 5.1.1 no such user"}
    now = utcnow()
    with session_scope() as s:
        for sid, err in errors.items():
            s.execute(update(Send).where(Send.id == sid).values(status="failed", error=err, sent_at=None))
        s.execute(Event.__table__.insert(), [
            {"event_id": f"bot-{i}", "type": "click", "status": "excluded", "campaign_id": cid, "send_id": ids[5],
             "revenue": 0.0, "occurred_at": now, "received_at": now, "reason": reason}
            for i, reason in enumerate(["bot:fast", "bot:fast", "bot:user_agent"])])
        s.get(SendPeriod, pid).guard_tripped_at = now
    rep = report(cid)
    h = rep["happened"]
    assert h["failed_sends"] == 4 and h["sends_assigned"] == 200 and h["failed_share"] == pytest.approx(0.02)
    by_reason = {f["reason"]: f for f in h["failures"]}
    assert {k: v["sends"] for k, v in by_reason.items()} == {
        "template failed to render": 2, "suppressed at send time": 1, "refused by the mail server": 1}
    assert by_reason["template failed to render"]["periods"] == [{"period": 1, "sends": 2}]
    assert by_reason["template failed to render"]["example"].startswith("render failed:")
    assert h["excluded_events"] == [{"type": "click", "rule": "bot:fast", "events": 2},
                                    {"type": "click", "rule": "bot:user_agent", "events": 1}]
    assert h["guard_pauses"] and h["guard_pauses"][0]["period"] == 1
    assert any("never delivered" in c for c in rep["caveats"])
    assert "4 emails could not be delivered" in rep["summary"]
    # the same in every format
    html = reports.render_html(rep)
    for text in ("template failed to render", "bot:user_agent", "suppressed at send time"):
        assert text in html
    csv_rows = list(reports.csv_rows(rep))
    failed = {r[3]: r[6] for r in csv_rows if r[1] == "failed_sends"}
    assert failed == {"template failed to render": 2, "suppressed at send time": 1, "refused by the mail server": 1}
    assert {r[3]: r[6] for r in csv_rows if r[1] == "excluded_events"} == {"click bot:fast": 2,
                                                                          "click bot:user_agent": 1}


def _orders_before_start(cid: int, seed: int) -> dict[int, float]:
    """Pre-campaign orders for most customers; returns each customer's spend."""
    from campaigns.models import Campaign, Order
    rng = np.random.default_rng(seed)
    spend = {}
    with session_scope() as s:
        start = s.get(Campaign, cid).started_at
        rows = []
        for cust in {x.customer_id for x in all_sends(cid)}:
            for j in range(int(rng.poisson(2))):
                amount = float(round(rng.gamma(2.0, 15.0), 2))
                spend[cust] = spend.get(cust, 0.0) + amount
                rows.append({"order_id": f"o{cid}-{cust}-{j}", "customer_id": cust, "amount": amount,
                             "ordered_at": start - timedelta(days=int(rng.integers(1, 300)))})
            # an order after the start must not count
            rows.append({"order_id": f"late{cid}-{cust}", "customer_id": cust, "amount": 1_000.0,
                         "ordered_at": start + timedelta(hours=1)})
        s.execute(Order.__table__.insert(), rows)
    return spend


def test_cuped_adjustment_on_pre_campaign_orders_and_its_fallback(database_url, redis_server):
    cid = setup_campaign(800, holdout_share=0.3)
    run_periods(cid, 1)
    before = report(cid)["overall"]["adjusted_lift"]["revenue_per_send"]
    assert before["fallback"] is not None and before["covariates"] == []  # no orders yet: unadjusted
    assert before["absolute_lift_ci95"] == pytest.approx(before["unadjusted_ci95"])
    spend = _orders_before_start(cid, seed=8)
    rng = np.random.default_rng(9)
    sends = all_sends(cid)
    with session_scope() as s:  # campaign revenue follows pre-campaign spend, plus noise and a lift
        for x in sends:
            rev = 0.5 * spend.get(x.customer_id, 0.0) + float(rng.gamma(1.0, 5.0)) + (3.0 if x.arm >= 0 else 0.0)
            s.execute(update(Send).where(Send.id == x.id).values(revenue=rev))
    rep = report(cid)
    adj = rep["overall"]["adjusted_lift"]["revenue_per_send"]
    assert adj["fallback"] is None and adj["covariates"] == ["pre-campaign spend", "pre-campaign orders"]
    assert adj["variance_reduction"] > 0.5
    # a per-send recomputation: pooled within-group OLS of revenue on (spend, orders)
    sends = all_sends(cid)
    y = np.array([x.revenue for x in sends])
    x1 = np.array([spend.get(x.customer_id, 0.0) for x in sends])
    with session_scope() as s:
        from campaigns.models import Campaign, Order
        start = s.get(Campaign, cid).started_at
        counts = defaultdict(int)
        for o in s.execute(select(Order).where(Order.ordered_at < start)).scalars():
            counts[o.customer_id] += 1
    x2 = np.array([float(counts[x.customer_id]) for x in sends])
    t = np.array([x.arm >= 0 for x in sends])
    X = np.column_stack([x1, x2])
    Xc = np.where(t[:, None], X - X[t].mean(0), X - X[~t].mean(0))
    yc = np.where(t, y - y[t].mean(), y - y[~t].mean())
    theta = np.linalg.lstsq(Xc, yc, rcond=None)[0]
    diff = (y[t].mean() - y[~t].mean()) - theta @ (X[t].mean(0) - X[~t].mean(0))
    assert adj["absolute_lift"] == pytest.approx(diff)
    assert adj["theta"] == pytest.approx(list(theta))
    width = adj["absolute_lift_ci95"][1] - adj["absolute_lift_ci95"][0]
    raw_width = adj["unadjusted_ci95"][1] - adj["unadjusted_ci95"][0]
    assert width < raw_width and width == pytest.approx(raw_width * math.sqrt(1 - adj["variance_reduction"]))
    html = reports.render_html(rep)
    assert "pre-campaign" in html


def test_summary_and_verdict_follow_the_numbers(campaign):
    rep = report(campaign)
    lf = rep["overall"]["lift"][rep["objective_metric"]]
    assert lf["verdict"] in reports.VERDICTS
    cs = lf["absolute_lift_anytime_ci95"]
    assert lf["verdict"] == ("better" if cs[0] > 0 else "worse" if cs[1] < 0 else "undecided")
    assert f"{rep['overall']['bandit']['sends']:,} customers got an email chosen by the bandit" in rep["summary"]
    proj = rep["business"]["projection"]["conversions"]
    audience = rep["business"]["audience_per_period"]
    assert audience == (rep["overall"]["bandit"]["sends"] + rep["overall"]["control"]["sends"]) / 2
    assert proj["value"] == pytest.approx(lf["absolute_lift"] * audience * 52)
    assert rep["business"]["assumptions"]
    html = reports.render_html(rep)
    assert rep["summary"].split(".")[0] in html.replace("&#39;", "'")
    assert "Charts rendered" not in html and rep["generated_at"] not in html


def test_posteriors_are_reused_until_the_totals_change(campaign):
    reports._POSTERIOR_CACHE.clear()
    first = report(campaign)
    assert len(reports._POSTERIOR_CACHE) == 1
    again = report(campaign)
    assert len(reports._POSTERIOR_CACHE) == 1
    assert again["segments"][0]["leaderboard"] == first["segments"][0]["leaderboard"]
    reports._POSTERIOR_CACHE.clear()
    assert report(campaign)["segments"][0]["leaderboard"] == first["segments"][0]["leaderboard"]  # seeded
    with session_scope() as s:  # new feedback: every send of arm 0 converts
        s.execute(update(Send).where(Send.campaign_id == campaign, Send.arm == 0)
                  .values(first_click_at=utcnow(), first_conversion_at=utcnow(), revenue=100.0))
    after = report(campaign)
    assert len(reports._POSTERIOR_CACHE) == 2
    row = next(r for r in after["segments"][0]["leaderboard"]["conversion_rate"] if r["arm"] == 0)
    before = next(r for r in first["segments"][0]["leaderboard"]["conversion_rate"] if r["arm"] == 0)
    assert row["posterior_mean"] > before["posterior_mean"]


def test_the_report_reads_one_consistent_snapshot(campaign):
    """A fold that commits while the report is being computed is not half seen: every query of the
    report's unit of work sees the database as it was at its first read."""
    from campaigns.db import snapshot_scope

    def clicks(session) -> int:
        ids = [p.id for p in report_repo.campaign_periods(session, campaign)]
        return sum(g.clicks for g in report_repo.ledger_groups(session, ids))

    with snapshot_scope() as snap:
        before = clicks(snap)
        with session_scope() as s:  # a worker folds clicks meanwhile
            s.execute(update(Send).where(Send.campaign_id == campaign).values(first_click_at=utcnow(), clicks=1))
        assert clicks(snap) == before
    with session_scope() as s:
        assert clicks(s) > before
