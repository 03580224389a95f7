"""Waves at the service level: the setting is stored with the campaign, a period's snapshots are
unique per (period, segment, wave) and every existing snapshot is wave 1."""

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from campaigns.db import session_scope
from campaigns.models import AllocationSnapshot, Campaign
from campaigns.services import periods
from tests.campaigns.test_periods import new_period, setup_campaign


def _copy(snap: AllocationSnapshot, wave: int) -> AllocationSnapshot:
    data = snap.model_dump(exclude={"id"})
    return AllocationSnapshot(**{**data, "wave": wave})


def test_snapshots_are_unique_per_period_segment_and_wave(database_url, redis_server):
    cid = setup_campaign(30, waves={"first_share": 0.2, "wait_hours": 2})
    with session_scope() as s:
        assert s.get(Campaign, cid).waves == {"first_share": 0.2, "wait_hours": 2.0}
    assert periods.run_period(new_period(cid)) == "completed"
    with session_scope() as s:
        snaps = list(s.execute(select(AllocationSnapshot).where(AllocationSnapshot.campaign_id == cid)).scalars())
        assert snaps and {snap.wave for snap in snaps} == {1}
        first = snaps[0]
        s.add(_copy(first, 2))  # a second wave's snapshot beside the first: allowed
        s.flush()
        with pytest.raises(IntegrityError), s.begin_nested():
            s.add(_copy(first, 2))  # the same wave twice: refused by the database
            s.flush()
        s.rollback()
