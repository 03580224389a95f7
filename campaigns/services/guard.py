"""The auto-pause guard: a campaign whose recipients unsubscribe or complain too much is paused.

Beat runs `run_guard` every MAB_GUARD_INTERVAL_SECONDS. For every period of an active campaign that
is running, or finished within MAB_GUARD_LOOKBACK_DAYS, and has at least MAB_GUARD_MIN_SENDS sends,
the rate of each kind of negative feedback is

    sends of the period with an attributed unsubscribe (complaint) event / sends of the period

and a rate above MAB_GUARD_UNSUBSCRIBE_RATE (MAB_GUARD_COMPLAINT_RATE) pauses the campaign through
the ordinary lifecycle transition, so a running period stops handing out chunks after its current
batch. The reason is recorded on the campaign ("auto-paused: unsubscribe rate 1.4% (14 of 1,000
sends) in period 3 exceeds 1.0%"), logged at WARNING and counted (mab_guard_pauses_total).

Each period trips the guard at most once: it is marked, so an operator who looked and resumed the
campaign is not overruled a minute later by the same period's figures. A later period is judged
afresh. Tiny periods are not judged at all (a handful of unsubscribes out of 50 sends is noise).
"""

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from campaigns import metrics
from campaigns.db import session_scope
from campaigns.errors import Conflict
from campaigns.models import EventType
from campaigns.repositories import guard as repo
from campaigns.services import campaigns as campaign_service
from campaigns.settings import Settings, get_settings

log = logging.getLogger(__name__)


def percent(x: float) -> str:
    """1.4%, 1.0%; two decimals below 1% so a 0.15% complaint rate does not read as 0.1% or 0.2%."""
    return f"{x:.1%}" if x >= 0.01 else f"{x:.2%}"


@dataclass(frozen=True)
class Trip:
    campaign_id: int
    period_id: int
    period_number: int
    rule: str  # the event type: unsubscribe or complaint
    count: int
    sends: int
    threshold: float

    @property
    def rate(self) -> float:
        return self.count / self.sends

    def describe(self) -> str:
        return (f"{self.rule} rate {percent(self.rate)} ({self.count:,} of {self.sends:,} sends) "
                f"in period {self.period_number} exceeds {percent(self.threshold)}")


def thresholds(settings: Settings) -> dict[str, float]:
    """Rule -> threshold; a rule set to 0 is off."""
    rules = {EventType.UNSUBSCRIBE.value: settings.guard_unsubscribe_rate,
             EventType.COMPLAINT.value: settings.guard_complaint_rate}
    return {rule: t for rule, t in rules.items() if t > 0}


def evaluate(periods: list, feedback: dict[tuple[int, str], int], limits: dict[str, float]) -> list[Trip]:
    """The trips among `periods` (rows with id, campaign_id, number, sent). Pure: no I/O."""
    trips = []
    for p in periods:
        for rule, threshold in limits.items():
            count = feedback.get((p.id, rule), 0)
            if p.sent and count / p.sent > threshold:
                trips.append(Trip(p.campaign_id, p.id, p.number, rule, count, p.sent, threshold))
    return trips


def reason_for(trips: list[Trip]) -> str:
    """The newest tripping period speaks for the campaign; complaints first (the graver signal)."""
    newest = max(t.period_number for t in trips)
    named = sorted((t for t in trips if t.period_number == newest), key=lambda t: t.rule != EventType.COMPLAINT)
    return "auto-paused: " + "; ".join(t.describe() for t in named)


def find_trips(now: datetime | None = None) -> list[Trip]:
    settings = get_settings()
    limits = thresholds(settings)
    if not limits:
        return []
    now = now or datetime.now(UTC)
    with session_scope() as session:
        periods = repo.watched_periods(session, now - timedelta(days=settings.guard_lookback_days),
                                       settings.guard_min_sends)
        feedback = repo.negative_feedback(session, {p.campaign_id for p in periods}, {p.id for p in periods})
    return evaluate(periods, feedback, limits)


def pause(campaign_id: int, trips: list[Trip], now: datetime) -> str | None:
    """Pause one campaign for its trips, in its own transaction. None when it is no longer active
    (paused or completed meanwhile): then nothing is recorded and a later run judges again."""
    reason = reason_for(trips)
    try:
        with session_scope() as session:
            campaign_service.transition(session, campaign_id, "pause")
            repo.set_status_reason(session, campaign_id, reason)
            repo.mark_tripped(session, sorted({t.period_id for t in trips}), now)
    except Conflict:
        return None
    newest = max(trips, key=lambda t: t.period_number)
    for rule in sorted({t.rule for t in trips}):
        metrics.observe_guard_pause(rule)
    log.warning(reason, extra={"campaign_id": campaign_id, "period_id": newest.period_id,
                               "period_number": newest.period_number, "rule": newest.rule,
                               "rate": round(newest.rate, 6), "threshold": newest.threshold, "sends": newest.sends})
    return reason


def run_guard(now: datetime | None = None) -> dict[int, str]:
    """Beat's entry point: campaign id -> the reason it was paused for, for the ones paused now."""
    now = now or datetime.now(UTC)
    by_campaign: dict[int, list[Trip]] = defaultdict(list)
    for trip in find_trips(now):
        by_campaign[trip.campaign_id].append(trip)
    paused = {}
    for campaign_id, trips in by_campaign.items():
        reason = pause(campaign_id, trips, now)
        if reason:
            paused[campaign_id] = reason
    return paused
