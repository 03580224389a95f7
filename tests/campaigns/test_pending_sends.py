"""The period's allocation hands the engine the sends still inside their attribution window as
partly pending (the share of their feedback still to come), against a real database."""

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select, update

from campaigns.db import session_scope
from campaigns.models import PeriodStatus, Send, utcnow
from campaigns.settings import get_settings
from campaigns.services import periods
from tests.campaigns.test_periods import new_period, setup_campaign


def _stats(cid):
    with session_scope() as s:
        campaign = periods.campaign_service.get(s, cid)
        segment_ids = sorted({row for row in s.execute(select(Send.segment_id).where(Send.arm >= 0)).scalars()})
        n_arms = 1 + max(s.execute(select(Send.arm)).scalars())
        return periods._stats_by_segment(s, campaign, segment_ids, list(range(n_arms)))


def _age_of_hour_bucket(hours_ago: float) -> float:
    """The age the service gives a send delivered `hours_ago`: its hour's middle."""
    sent = utcnow() - timedelta(hours=hours_ago)
    return (utcnow() - sent.replace(minute=0, second=0, microsecond=0)).total_seconds() / 3600 - 0.5


def test_recent_sends_are_partly_pending_and_old_ones_are_failures(database_url, redis_server):
    cid = setup_campaign(600, holdout_share=0.0)  # attribution window: 7 days (the default)
    pid = new_period(cid)
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    with session_scope() as s:
        sends = list(s.execute(select(Send).where(Send.period_id == pid, Send.arm >= 0)).scalars())
        clicked = sends[0]
        s.execute(update(Send).where(Send.id == clicked.id).values(first_click_at=clicked.sent_at, clicks=1))
        # five hours ago, all of them (one hour bucket): a wave's sends, waiting for their clicks
        s.execute(update(Send).where(Send.period_id == pid).values(sent_at=utcnow() - timedelta(hours=5)))
    settings = get_settings()
    age = _age_of_hour_bucket(5)
    stats = _stats(cid)
    total_sends = sum(float(st.sends.sum()) for st in stats.values())
    assert total_sends == len(sends)
    click_share = periods.pending_share(age, settings.click_latency_hours)
    assert 0.3 < click_share < 0.45  # a 3-hour median: most of the clicks should be in after 5 hours
    assert sum(float(st.pending_clicks.sum()) for st in stats.values()) == pytest.approx(
        (len(sends) - 1) * click_share, rel=1e-3)
    assert sum(float(st.pending_conversions.sum()) for st in stats.values()) == pytest.approx(
        periods.pending_share(age, settings.conversion_latency_hours), rel=1e-3)
    for st in stats.values():
        np.testing.assert_allclose(st.pending_clicks, (st.sends - st.clicks) * click_share, rtol=1e-3)
        assert np.all(st.pending_clicks <= st.sends - st.clicks)

    # eight days later the window has closed: no send is pending any more
    with session_scope() as s:
        s.execute(update(Send).where(Send.period_id == pid).values(sent_at=Send.sent_at - timedelta(days=8)))
    stats = _stats(cid)
    assert all(float(st.pending_clicks.sum()) == 0 and float(st.pending_conversions.sum()) == 0
               for st in stats.values())
    assert sum(float(st.sends.sum()) for st in stats.values()) == total_sends


def test_pending_share_is_the_latency_tail():
    assert periods.pending_share(0.0, 3.0) == 1.0
    assert periods.pending_share(3.0, 3.0) == 0.5
    assert periods.pending_share(-1.0, 3.0) == 1.0  # a clock a little ahead: nothing has arrived yet
    shares = periods.pending_share(np.array([1.0, 10.0, 100.0]), 3.0)
    assert np.all(np.diff(shares) < 0) and shares[-1] < 0.03
