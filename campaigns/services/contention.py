"""Several campaigns at once: who gets a customer at the frequency cap is decided, not raced.

When periods of campaigns with overlapping audiences are planned at the same time, each segment's
customers at their last slot go to the campaign ranked first for that segment by
1. its `priority` (higher first), then
2. the expected value per send of its best arm in the segment (the arm its allocation snapshot
   gives the highest probability of being best; the posterior mean of the campaign's objective
   under a uniform prior: clicks or conversions per send, revenue per send), higher first, then
3. its id (the older campaign first).

The rule works by order, not by taking back: a period's claim of a segment waits (the plan goes on
with its other segments and is resumed later) while an in-flight period of a campaign ranked
higher for that segment has not claimed it yet; the higher-ranked one claims first, the other then
gets the customers still under the cap. Claims under a cap are serialised (`lock_cap`), so two
coordinators in different workers cannot both take a customer's last slot. A period planned when
no rival was in flight keeps what it claimed, even against a higher-ranked campaign that starts
later: its emails may already have left.

Each period records, by campaign, how many of its targeted customers were left out because another
campaign's mail holds their slots (`send_period.lost_to`), in the same transaction as the claim.
"""

import logging
from collections.abc import Callable

import numpy as np
from sqlmodel import Session

from campaigns import jobs
from campaigns.db import session_scope
from campaigns.models import AllocationSnapshot, Campaign, SendPeriod
from campaigns.repositories import contention as repo
from campaigns.repositories import sends as send_repo

log = logging.getLogger(__name__)

lock_cap = repo.lock_cap


class Waiting(str):
    """A segment claim that must wait for a higher-ranked campaign (the outcome, in words)."""


def expected_value(objective: str, snap: AllocationSnapshot | None) -> float:
    """Expected value per send of the snapshot's best arm (highest P(best)) under `objective`:
    Beta(1, 1) posterior mean of clicks or conversions per send; revenue per send otherwise."""
    if snap is None or not snap.arms:
        return 0.0
    best = int(np.argmax(snap.p_best)) if snap.p_best else 0
    sends = float(snap.counts.get("sends", [0.0] * len(snap.arms))[best])
    if objective in ("click", "conversion"):
        wins = float(snap.counts.get("clicks" if objective == "click" else "conversions")[best])
        return (wins + 1.0) / (sends + 2.0)
    return float(snap.counts.get("revenue", [0.0] * len(snap.arms))[best]) / (sends + 1.0)


def rank_key(priority: int, value: float, campaign_id: int) -> tuple:
    """Sorts the campaign ranked first for a segment first."""
    return (-priority, -value, campaign_id)


def blocker(session: Session, campaign: Campaign, snap: AllocationSnapshot) -> Waiting | None:
    """Why this claim of `snap`'s segment must wait: a higher-ranked in-flight campaign has not
    claimed the segment yet. A rival whose plan has not opened (no snapshot, no expected value
    yet) is waited for unless its priority alone ranks it lower."""
    mine = rank_key(campaign.priority, expected_value(campaign.objective, snap), campaign.id)
    for rival in repo.unclaimed_rivals(session, campaign.id, snap.segment_id):
        if rival.snapshot is None:
            ahead = rival.priority >= campaign.priority
        else:
            ahead = rank_key(rival.priority, expected_value(rival.objective, rival.snapshot), rival.campaign_id) < mine
        if ahead:
            return Waiting(f"waiting: segment {snap.segment_id} goes first to campaign {rival.campaign_id} "
                           f"(ranked higher), whose period {rival.period_id} has not claimed it yet")
    return None


def record_lost(session: Session, period: SendPeriod, segment_id: int, audience: dict | None,
                cap: send_repo.Cap) -> dict[int, int]:
    """Add to the period's `lost_to` the segment's targeted customers that other campaigns' mail
    holds at the cap (in the claim's transaction: a claim that rolls back counts nothing)."""
    lost = send_repo.capped_by_campaign(session, segment_id, period.id, cap, audience)
    if lost:
        total = dict(period.lost_to or {})
        for campaign_id, n in lost.items():
            total[str(campaign_id)] = total.get(str(campaign_id), 0) + n
        period.lost_to = total
        session.flush()
    return lost


def wake_waiting(period_id: int, enqueue_run: Callable[[int], None] = jobs.run_period,
                 claimed_only: bool = True) -> None:
    """After a plan claimed segments (`claimed_only`), or first stored its snapshots: hand out again
    the other unfinished plans that have not claimed one of its (claimed) segments, so one that
    waits for this period goes on now rather than at the sweeper's next pass (a plan handed out
    twice claims nothing twice). Once per claim or per period: two waiting plans never wake each
    other in turns."""
    with session_scope() as session:
        waiting = repo.unplanned_periods(session, period_id, claimed_only)
    for other in waiting:
        enqueue_run(other)
