"""Unit tests of the RFM rule (no database): recent <= 60 days, frequent >= 4 orders, high spend >= 200
(the defaults of campaigns/settings.py)."""

import pytest

from campaigns.services.segments import RFM_SEGMENTS, rfm_segment
from campaigns.settings import get_settings

RECENT, LAPSED = 10.0, 200.0
FREQUENT, RARE = 6, 1
HIGH, LOW = 500.0, 20.0

ALL_EIGHT = [
    (RECENT, FREQUENT, HIGH, "champions"),
    (RECENT, FREQUENT, LOW, "loyal_regulars"),
    (RECENT, RARE, HIGH, "big_spenders"),
    (RECENT, RARE, LOW, "new_or_occasional"),
    (LAPSED, FREQUENT, HIGH, "cant_lose_them"),
    (LAPSED, FREQUENT, LOW, "at_risk_regulars"),
    (LAPSED, RARE, HIGH, "lapsed_big_spenders"),
    (LAPSED, RARE, LOW, "hibernating"),
]


@pytest.fixture(autouse=True)
def default_thresholds(monkeypatch):
    """The rule reads settings: make sure no MAB_RFM_* variable of the environment leaks in."""
    for name in ("MAB_RFM_RECENT_DAYS", "MAB_RFM_FREQUENT_ORDERS", "MAB_RFM_HIGH_SPEND", "MAB_RFM_LOOKBACK_DAYS"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    s = get_settings()
    assert (s.rfm_recent_days, s.rfm_frequent_orders, s.rfm_high_spend) == (60, 4, 200.0)
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(("days", "orders", "spend", "segment"), ALL_EIGHT, ids=[c[3] for c in ALL_EIGHT])
def test_each_combination_has_its_segment(days, orders, spend, segment):
    assert rfm_segment(days, orders, spend) == segment


def test_the_eight_segments_are_distinct_and_cover_every_combination():
    assert len(RFM_SEGMENTS) == 8
    assert len({name for name, _ in RFM_SEGMENTS.values()}) == 8
    assert {rfm_segment(d, o, s) for d, o, s, _ in ALL_EIGHT} == {name for name, _ in RFM_SEGMENTS.values()}


@pytest.mark.parametrize(("days", "segment"), [
    (0.0, "champions"), (59.999, "champions"), (60, "champions"), (60.0, "champions"),
    (60.001, "cant_lose_them"), (61, "cant_lose_them"),
])
def test_recency_edge(days, segment):
    assert rfm_segment(days, 4, 200.0) == segment


@pytest.mark.parametrize(("orders", "segment"), [
    (4, "champions"), (5, "champions"), (3, "big_spenders"), (0, "big_spenders"),
])
def test_frequency_edge(orders, segment):
    assert rfm_segment(30, orders, 250.0) == segment


@pytest.mark.parametrize(("spend", "segment"), [
    (200.0, "champions"), (200.01, "champions"),
    (199.99, "loyal_regulars"), (0.0, "loyal_regulars"),
])
def test_spend_edge(spend, segment):
    assert rfm_segment(30, 4, spend) == segment


def test_never_ordered_is_hibernating():
    assert rfm_segment(None, 0, 0.0) == "hibernating"


def test_thresholds_come_from_settings(monkeypatch):
    monkeypatch.setenv("MAB_RFM_RECENT_DAYS", "30")
    monkeypatch.setenv("MAB_RFM_FREQUENT_ORDERS", "2")
    monkeypatch.setenv("MAB_RFM_HIGH_SPEND", "50")
    get_settings.cache_clear()
    assert rfm_segment(31, 2, 50.0) == "cant_lose_them"
    assert rfm_segment(30, 1, 49.0) == "new_or_occasional"
    assert rfm_segment(30, 2, 50.0) == "champions"


def test_the_database_derivation_follows_the_rule_for_every_customer(database_url):
    """`derive_segments` runs as one SQL UPDATE; `rfm_segment` is the rule written out. Random
    histories (fixed seed) with orders on the thresholds' edges and outside the lookback: every
    customer must land where the rule says, on SQLite and PostgreSQL."""
    from datetime import UTC, datetime, timedelta

    import numpy as np

    from campaigns.db import session_scope
    from campaigns.schemas import CustomerIn, OrderIn
    from campaigns.services import customers, segments

    as_of = datetime(2026, 6, 1, 12, tzinfo=UTC)
    rng = np.random.default_rng(11)
    s = get_settings()
    edges = [0.0, s.rfm_recent_days - 0.001, s.rfm_recent_days + 0.001, s.rfm_lookback_days - 1,
             s.rfm_lookback_days + 1, -3.0]  # -3: after as_of, must be ignored
    people, orders, expected = [], [], {}
    for i in range(300):
        ext = f"p{i}"
        people.append(CustomerIn(external_id=ext, email=f"{ext}@example.com", segment="champions"))
        history = [(float(rng.choice(edges)) if rng.random() < 0.5 else float(rng.uniform(0, 500)),
                    float(rng.choice([0.0, s.rfm_high_spend / 4, s.rfm_high_spend, 120.0])))
                   for _ in range(int(rng.integers(0, 7)))]
        for k, (days, amount) in enumerate(history):
            orders.append(OrderIn(order_id=f"{ext}-{k}", customer_external_id=ext,
                                  ordered_at=as_of - timedelta(days=days), amount=amount))
        past = [(d, a) for d, a in history if d >= 0]
        window = [(d, a) for d, a in past if d <= s.rfm_lookback_days]
        last = min((d for d, _ in past), default=None)
        expected[ext] = rfm_segment(last, len(window), sum(a for _, a in window))
    with session_scope() as session:
        customers.import_customers(session, customers.json_rows(people))
        customers.import_orders(session, orders)
    with session_scope() as session:
        result = segments.derive_segments(session, as_of)
    with session_scope() as session:
        got = {ext: customers.get_customer(session, ext)["segment"] for ext in expected}
    assert got == expected
    assert result["customers"] == 300 and sum(result["by_segment"].values()) == 300
    assert len(set(expected.values())) == 8  # the histories reach every segment
