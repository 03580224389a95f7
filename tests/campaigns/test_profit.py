"""The profit objective through the real service (SQLite and PostgreSQL): a campaign whose deep
discount converts better but earns less moves its next period's allocation away from it, while the
conversion objective on the same feedback moves towards it; unsubscribes reach the engine per
segment and arm."""

from datetime import timedelta

import numpy as np
from sqlalchemy import select, update

import bandit
from campaigns import economics
from campaigns.db import session_scope
from campaigns.models import AllocationSnapshot, Customer, PeriodStatus, Send
from campaigns.schemas import CampaignCreate, CustomerIn
from campaigns.services import campaigns, customers, events, feedback_mail, periods
from tests.factories import customers as make_customers
from tests.factories import small_campaign_payload

OFFERS = ["free_drink", "half_price"]  # arm 0, arm 1
CONVERSION = {"free_drink": 0.10, "half_price": 0.14}  # the discount converts better ...
ORDER = 30.0
ECONOMICS = {"margin": 0.6, "unsubscribe_cost": 5.0, "level_costs": {"offer": {"half_price": {"share": 0.5}}}}
# ... but earns less: profit per send 0.10 x 30 x 0.6 = 1.80 against 0.14 x 30 x (0.6 - 0.5) = 0.42


def profit_campaign(n_customers: int, **overrides) -> int:
    payload = small_campaign_payload(**{"factors": {"tone": ["friendly"], "offer": OFFERS}, "objective": "profit",
                                        "economics": ECONOMICS, "holdout_share": 0.0, **overrides})
    with session_scope() as s:
        customers.import_customers(s, customers.json_rows([CustomerIn(**c) for c in make_customers(n_customers)]))
        cid = campaigns.create(s, CampaignCreate(**payload)).id
        campaigns.transition(s, cid, "start")
    return cid


def feedback(period_id: int) -> None:
    """Exactly each offer's conversion rate of its sends convert (after a click), for ORDER each;
    then the sends are made 8 days old, so the attribution window has closed on the rest."""
    with session_scope() as s:
        sends = list(s.execute(select(Send).where(Send.period_id == period_id).order_by(Send.id)).scalars())
    batch = []
    for seg_arm in {(x.segment_id, x.arm) for x in sends}:
        group = [x for x in sends if (x.segment_id, x.arm) == seg_arm]
        converting = round(CONVERSION[OFFERS[seg_arm[1]]] * len(group))
        for x in group[:converting]:
            batch += [{"event_id": f"k{x.id}", "type": "click", "send_id": x.id, "occurred_at": None},
                      {"event_id": f"v{x.id}", "type": "conversion", "send_id": x.id, "revenue": ORDER,
                       "occurred_at": None}]
    with session_scope() as s:
        events.process_events(s, batch)
    with session_scope() as s:
        s.execute(update(Send).where(Send.period_id == period_id).values(
            sent_at=Send.sent_at - timedelta(days=8)))


def test_profit_allocation_moves_away_from_the_costly_discount_that_converts_better(database_url, redis_server):
    cid = profit_campaign(1_200)
    with session_scope() as s:
        first = periods.start_period(s, cid).id
    assert periods.run_period(first) == PeriodStatus.COMPLETED
    feedback(first)
    with session_scope() as s:
        second = periods.start_period(s, cid).id
    assert periods.coordinate(second, enqueue=lambda ids: None).startswith("fanned out")
    with session_scope() as s:
        snaps = list(s.execute(select(AllocationSnapshot).where(AllocationSnapshot.period_id == second)).scalars())
        campaign = campaigns.get(s, cid)
        stats = periods._stats_by_segment(s, campaign, [x.segment_id for x in snaps], [0, 1])
    assert len(snaps) == 2
    for snap in snaps:
        assert snap.arms == [0, 1]
        assert abs(sum(snap.weights) - 1) < 1e-9
        assert snap.diagnostics["objective"] == "profit" and snap.diagnostics["model"] in ("hierarchical",
                                                                                          "independent")
        assert snap.weights[0] > 0.9, snap.weights  # the free drink: profit 1.80 a send against 0.42
        st = stats[snap.segment_id]
        assert st.conversions[1] / st.sends[1] > st.conversions[0] / st.sends[0]  # the discount converts better
    # the same feedback under the conversion objective goes the other way: the deepest discount wins
    conversion = bandit.allocate_segments([stats[x.segment_id] for x in snaps],
                                          bandit.AllocationConfig(objective="conversion", model="hierarchical"),
                                          seed=7)
    assert all(a.weights[1] > a.weights[0] for a in conversion)


def test_unsubscribes_reach_the_engine_per_segment_and_arm(database_url, redis_server):
    cid = profit_campaign(200)
    with session_scope() as s:
        pid = periods.start_period(s, cid).id
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    with session_scope() as s:
        sends = list(s.execute(select(Send).where(Send.period_id == pid).order_by(Send.id)).scalars())
        chosen = sends[:7]
        for x in chosen + chosen[:2]:  # reported twice: still one unsubscribe per send
            feedback_mail.record_unsubscribe(s, x, s.get(Customer, x.customer_id), "test")
    expected = {}
    for x in chosen:
        expected[(x.segment_id, x.arm)] = expected.get((x.segment_id, x.arm), 0) + 1
    with session_scope() as s:
        campaign = campaigns.get(s, cid)
        segment_ids = sorted({x.segment_id for x in sends})
        stats = periods._stats_by_segment(s, campaign, segment_ids, [0, 1])
        config = periods._allocation_config(campaign, [v.params for v in periods.repo.variants(s, cid)])
    for sid in segment_ids:
        want = [expected.get((sid, arm), 0) for arm in (0, 1)]
        np.testing.assert_array_equal(stats[sid].unsubscribes, want)
        assert (stats[sid].unsubscribes <= stats[sid].sends).all()
    assert sum(float(st.unsubscribes.sum()) for st in stats.values()) == 7
    # the engine's economics: the discount's level gives away half the order, nothing else costs
    assert config.model is bandit.Model.HIERARCHICAL
    np.testing.assert_array_equal(config.economics.cost_share, [0.0, 0.5])
    np.testing.assert_array_equal(config.economics.cost_fixed, [0.0, 0.0])
    assert (config.economics.margin, config.economics.unsubscribe_cost) == (0.6, 5.0)


def test_arm_costs_sum_over_a_variants_levels():
    stored = {"margin": 0.5, "unsubscribe_cost": 0.0, "level_costs": {
        "discount": {"20%": {"share": 0.2, "fixed": 0.0}},
        "offer": {"free dessert": {"share": 0.0, "fixed": 4.5}, "gift": {"share": 0.1, "fixed": 1.0}}}}
    variants = [{"discount": "0%", "offer": "none"}, {"discount": "20%", "offer": "free dessert"},
                {"discount": "20%", "offer": "gift"}]
    share, fixed = economics.arm_costs(stored, variants)
    np.testing.assert_allclose(share, [0.0, 0.2, 0.3])
    np.testing.assert_allclose(fixed, [0.0, 4.5, 1.0])
    assert economics.engine_model("profit", "auto") is bandit.Model.HIERARCHICAL
    assert economics.engine_model("conversion", "auto") is bandit.Model.AUTO
