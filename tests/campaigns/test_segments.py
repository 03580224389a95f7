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
