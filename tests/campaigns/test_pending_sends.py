"""The period's allocation hands the engine the sends still inside their attribution window as
pending (neither successes nor failures), against a real database."""

from datetime import timedelta

import numpy as np
from sqlalchemy import select, update

from campaigns.db import session_scope
from campaigns.models import PeriodStatus, Send
from campaigns.services import periods
from tests.campaigns.test_periods import new_period, setup_campaign


def _stats(cid):
    with session_scope() as s:
        campaign = periods.campaign_service.get(s, cid)
        segment_ids = sorted({row for row in s.execute(select(Send.segment_id).where(Send.arm >= 0)).scalars()})
        n_arms = 1 + max(s.execute(select(Send.arm)).scalars())
        return periods._stats_by_segment(s, campaign, segment_ids, list(range(n_arms)))


def test_recent_sends_are_pending_and_old_ones_are_failures(database_url, redis_server):
    cid = setup_campaign(600, holdout_share=0.0)  # attribution window: 7 days (the default)
    pid = new_period(cid)
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    with session_scope() as s:
        sends = list(s.execute(select(Send).where(Send.period_id == pid, Send.arm >= 0)).scalars())
        clicked = sends[0]
        s.execute(update(Send).where(Send.id == clicked.id).values(first_click_at=clicked.sent_at, clicks=1))
    stats = _stats(cid)
    total_sends = sum(float(st.sends.sum()) for st in stats.values())
    assert total_sends == len(sends)
    # every send is a week old at most: unclicked ones are pending clicks, the click a pending conversion
    assert sum(float(st.pending_clicks.sum()) for st in stats.values()) == len(sends) - 1
    assert sum(float(st.pending_conversions.sum()) for st in stats.values()) == 1
    for st in stats.values():
        np.testing.assert_array_equal(st.pending_clicks, st.sends - st.clicks)

    # eight days later the window has closed: no send is pending any more
    with session_scope() as s:
        s.execute(update(Send).where(Send.period_id == pid).values(sent_at=Send.sent_at - timedelta(days=8)))
    stats = _stats(cid)
    assert all(float(st.pending_clicks.sum()) == 0 and float(st.pending_conversions.sum()) == 0
               for st in stats.values())
    assert sum(float(st.sends.sum()) for st in stats.values()) == total_sends
