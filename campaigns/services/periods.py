"""Send periods: allocate per segment, assign every eligible customer once, fan the sends out.

A period runs in two phases that overlap, each safe to rerun after a crash:
1. plan (`coordinate`, one task): an allocation snapshot per segment (seeded, stored, reused on
   rerun); then segment by segment, one transaction each, a ledger row per eligible customer
   (claimed by the unique (period, customer) constraint) and those rows cut into chunks of send
   ids, handed to the workers as soon as they commit; then the period is marked planned;
2. deliver (`campaigns.services.sending.deliver_chunk`, one task per chunk, any number of workers):
   lease a chunk, render and deliver its queued rows in small committed batches. The last chunk to
   finish completes the period, once it is planned.
"""

import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

import bandit
from campaigns import design, economics, jobs, metrics, pacing, schedules, waves
from campaigns.db import on_commit, pinned_session_scope, session_scope
from campaigns.errors import Conflict, NotFound
from campaigns.models import (
    AllocationSnapshot,
    Campaign,
    CampaignStatus,
    PeriodStatus,
    SendPeriod,
    utcnow,
)
from campaigns.repositories import campaigns as repo
from campaigns.repositories import chunks as chunk_repo
from campaigns.repositories import sends as send_repo
from campaigns.services import audit, contention, period_health
from campaigns.services import campaigns as campaign_service
from campaigns.services import send_windows as window_service
from campaigns.services import versions as version_service
from campaigns.settings import get_settings

log = logging.getLogger(__name__)

HOLDOUT = bandit.HOLDOUT


def enqueue_run(period_id: int) -> None:
    jobs.run_period(period_id)


def enqueue_resume(period_id: int) -> None:
    """After a pause: replan if the period never got planned, and hand out its unfinished chunks."""
    with session_scope() as session:
        chunk_ids = chunk_repo.unfinished_ids(session, period_id)
        planned = repo.get_period(session, period_id).planned_at is not None
    if planned:
        enqueue_chunks(chunk_ids)
    else:
        enqueue_run(period_id)


def start_period(session: Session, campaign_id: int, hand_out: bool = True) -> SendPeriod:
    """Create the next period of an active campaign and hand it to a worker after the commit
    (`hand_out=False`: the caller does, once it has committed)."""
    campaign = campaign_service.get(session, campaign_id, for_update=True)
    if campaign.status != CampaignStatus.ACTIVE:
        raise Conflict(f"campaign {campaign_id} is {campaign.status}: start it (or resume it) before sending")
    inflight = repo.in_flight_period(session, campaign_id)
    if inflight is not None:
        raise Conflict(f"period {inflight.number} of campaign {campaign_id} is still {inflight.status}")
    period = SendPeriod(
        campaign_id=campaign_id,
        number=repo.last_period_number(session, campaign_id) + 1,
        seed=secrets.randbelow(2**31),
    )
    session.add(period)
    try:
        session.flush()  # the unique (campaign, number) refuses a concurrent second period
    except IntegrityError:
        raise Conflict(f"another period of campaign {campaign_id} was started at the same time") from None
    period_id = period.id
    if hand_out:
        on_commit(session, lambda: enqueue_run(period_id))
    return period


def get_period(session: Session, campaign_id: int, number: int) -> SendPeriod:
    period = repo.period_by_number(session, campaign_id, number)
    if period is None:
        raise NotFound(f"campaign {campaign_id} has no period {number}")
    return period


def segment_seed(period_seed: int, segment_id: int, purpose: int) -> int:
    return int(np.random.SeedSequence([period_seed, segment_id, purpose]).generate_state(1)[0])


def _arm_stats(session: Session, campaign: Campaign, segment_id: int, arms: list[int]) -> bandit.ArmStats:
    """Sufficient statistics of `arms` in one segment, aggregated from the ledger."""
    return _stats_by_segment(session, campaign, [segment_id], arms)[segment_id]


def _stats_by_segment(session: Session, campaign: Campaign, segment_ids: list[int], arms: list[int]):
    """Each segment's sufficient statistics over `arms`, with the sends still inside the attribution
    window passed as partly pending (`_pending_by_segment`)."""
    index = {arm: i for i, arm in enumerate(arms)}
    totals = {sid: np.zeros((6, len(arms))) for sid in segment_ids}
    for row in send_repo.arm_aggregates(session, campaign.id):
        if row.segment_id in totals and row.arm in index:
            totals[row.segment_id][:4, index[row.arm]] = (row.sends, row.clicks, row.conversions, row.revenue)
    _pending_by_segment(session, campaign, totals, index)
    unsubscribes = {sid: np.zeros(len(arms)) for sid in segment_ids}
    if campaign.objective == economics.PROFIT:  # only the profit objective prices unsubscribes
        for row in send_repo.unsubscribes_by_arm(session, campaign.id):
            if row.segment_id in unsubscribes and row.arm in index:
                unsubscribes[row.segment_id][index[row.arm]] = row.unsubscribes
    return {
        sid: bandit.ArmStats(
            sends=t[0], clicks=t[1], conversions=t[2], revenue=t[3], pending_clicks=np.minimum(t[4], t[0] - t[1]),
            # conversions without a click (view-through) can leave clicks - conversions below it
            pending_conversions=np.minimum(t[5], np.maximum(t[1] - t[2], 0.0)),
            unsubscribes=np.minimum(unsubscribes[sid], t[0]),
        )
        for sid, t in totals.items()
    }


def pending_share(age_hours: np.ndarray | float, median_hours: float) -> np.ndarray | float:
    """The share of a send's feedback still to come at `age_hours` after delivery, given it comes:
    median / (age + median), a log-logistic latency of shape 1 — half by the median, a long tail
    (a click median of 3 h leaves 11% of clicks after a day)."""
    return median_hours / (np.maximum(age_hours, 0.0) + median_hours)


def _pending_by_segment(session: Session, campaign: Campaign, totals: dict, index: dict) -> None:
    """Add to rows 4-5 of `totals` the pending clicks and conversions: a send inside the attribution
    window that has not clicked (clicked, not converted) yet counts as `pending_share` of a pending
    send and the rest of a failure. All-or-nothing would be wrong both ways: counted as failures,
    last week's sends would punish the arms mailed last; removed entirely, a wave's hours-old sends
    would add their clicks and no failures, and favour the arms it mailed most."""
    settings = get_settings()
    now = utcnow()
    since = now - timedelta(days=campaign.attribution_window_days)
    for row in send_repo.pending_by_hour(session, campaign.id, since):
        if row.segment_id not in totals or row.arm not in index:
            continue
        hour = datetime.fromisoformat(row.hour) if isinstance(row.hour, str) else row.hour
        age = (now - hour.replace(tzinfo=UTC)).total_seconds() / 3600 - 0.5  # the hour's middle
        column = totals[row.segment_id][:, index[row.arm]]
        column[4] += row.no_click * pending_share(age, settings.click_latency_hours)
        column[5] += row.no_conversion * pending_share(age, settings.conversion_latency_hours)


def _allocation_config(campaign: Campaign, variants: list[dict]) -> bandit.AllocationConfig:
    profit = campaign.objective == economics.PROFIT
    return bandit.AllocationConfig(
        objective=bandit.Objective(campaign.objective),
        floor=campaign.exploration_floor,
        burn_in_min_sends=campaign.burn_in_min_sends,
        model=economics.engine_model(campaign.objective, campaign.model),
        economics=economics.arm_economics(campaign.economics, variants) if profit else None,
    )


def factor_design(campaign: Campaign, variants: list[dict]) -> bandit.FactorDesign:
    """Each variant's level index per factor: what the structured model regresses on."""
    names = list(campaign.factors)
    levels = np.array([[campaign.factors[f].index(p[f]) for f in names] for p in variants], dtype=np.int64)
    return bandit.FactorDesign(levels, n_levels=tuple(len(campaign.factors[f]) for f in names), names=tuple(names))


def _restrict(weights: np.ndarray, eligible: list[int]) -> np.ndarray:
    """A segment's weights over the variants it may receive (per-segment exclusions). The engine
    allocates over the full grid so the models can share strength; excluded arms' share is
    redistributed in proportion, which keeps every eligible arm's floor."""
    w = weights[eligible]
    return w / w.sum() if w.sum() > 0 else np.full(len(eligible), 1.0 / len(eligible))


def _wave_seed(period: SendPeriod) -> int:
    """Wave 1 draws from the period's seed (as a period without waves); a later wave from its own."""
    if period.wave == 1:
        return period.seed
    return int(np.random.SeedSequence([period.seed, period.wave]).generate_state(1)[0])


def _snapshots(session: Session, campaign: Campaign, period: SendPeriod, segments) -> dict[int, AllocationSnapshot]:
    """Every segment's allocation for this period's current wave: computed together (the
    hierarchical and structured models pool across segments), stored once, reused as is if the
    period reruns. A second wave's posterior has the first wave's feedback so far."""
    existing = {s.id: repo.snapshot_for(session, period.id, s.id, period.wave) for s in segments}
    if all(existing.values()):
        return existing
    variants = [v.params for v in repo.variants(session, campaign.id)]
    all_arms = list(range(len(variants)))
    stats = _stats_by_segment(session, campaign, [s.id for s in segments], all_arms)
    allocations = bandit.allocate_segments(
        [stats[s.id] for s in segments], _allocation_config(campaign, variants), seed=_wave_seed(period),
        design=factor_design(campaign, variants),
    )
    # Segments a person promoted, pinned or set to uniform (model versions) keep the posterior's
    # P(best) for diagnostics, but their weights come from that mode; the bandit's go in diagnostics.
    modes = version_service.planning_modes(session, campaign.id, [design.variant_key(p) for p in variants])
    for segment, alloc in zip(segments, allocations, strict=True):
        if existing[segment.id] is not None:
            continue
        eligible = design.eligible_arms(variants, campaign.exclusions, segment.name)
        seg_stats = stats[segment.id]
        weights, stage, reason, extra = version_service.apply_mode(
            modes.get(segment.id), eligible, _restrict(alloc.weights, eligible), alloc.stage, alloc.reason
        )
        snap = AllocationSnapshot(
            campaign_id=campaign.id,
            period_id=period.id,
            segment_id=segment.id,
            version=period.number,
            wave=period.wave,
            seed=alloc.seed,
            stage=stage,
            reason=reason,
            holdout_share=campaign.holdout_share,
            arms=eligible,
            weights=[float(w) for w in weights],
            p_best=alloc.p_best[eligible].tolist(),
            counts={k: getattr(seg_stats, k)[eligible].tolist() for k in ("sends", "clicks", "conversions", "revenue")},
            diagnostics={"requested_model": campaign.model, **alloc.diagnostics, **extra},
        )
        session.add(snap)
        existing[segment.id] = snap
    session.flush()
    return existing


def _frequency_cap(now: datetime) -> tuple[int, datetime] | None:
    settings = get_settings()
    if not settings.frequency_cap:
        return None
    return settings.frequency_cap, now - timedelta(days=settings.frequency_window_days)


def _open_plan(period_id: int) -> str | tuple[list[int], list[int], bool]:
    """The plan's first step: under the period's row lock, check it may run, store the allocation
    snapshots (once) and mark the period running. Returns why not, or (the unfinished chunks of
    segments claimed before — a rerun hands them out again —, the snapshots still to claim, whether
    this is the period's first run)."""
    with session_scope() as session:
        # The period's row lock serialises coordinators here: a redelivered `run_period` waits, then
        # finds the snapshots stored and the claimed segments marked, and skips them.
        period = chunk_repo.lock_period(session, period_id)
        if period is None or period.status in (PeriodStatus.COMPLETED, PeriodStatus.FAILED):
            return period.status if period else "missing"
        campaign = campaign_service.get(session, period.campaign_id)
        if campaign.status != CampaignStatus.ACTIVE:
            return f"waiting: campaign is {campaign.status}"  # resume re-enqueues the period
        if period.next_wave_at is not None:
            if utcnow() < period.next_wave_at:
                return chunk_repo.unfinished_ids(session, period_id), [], False  # beat plans the next wave when due
            period.wave, period.next_wave_at = period.wave + 1, None
        if period.started_at is None:
            period.waves = campaign.waves  # fixed for the period, whatever later changes say
        segments = repo.campaign_segments(session, campaign.id)
        snapshots = _snapshots(session, campaign, period, segments)
        period.status = PeriodStatus.RUNNING
        first_run = period.started_at is None
        period.started_at = period.started_at or utcnow()
        todo = [] if period.planned_at else [snapshots[s.id].id for s in segments if snapshots[s.id].claimed_at is None]
        return chunk_repo.unfinished_ids(session, period_id), todo, first_run


def _claim_segment(session: Session, period_id: int, snapshot_id: int,
                   capped: send_repo.Cap | bool) -> str | list[int]:
    """One segment's step of the plan, in the caller's transaction: assign and claim every eligible
    customer of the segment (set-based) and cut what was claimed into chunks. Returns the new
    chunks' ids, or why the plan stops here (the period failed, the campaign is paused), or why
    this segment waits (`contention.Waiting`: a higher-ranked campaign claims it first)."""
    chunk_repo.lock_plan(session, period_id)
    if capped:
        contention.lock_cap(session)
    period = repo.get_period(session, period_id)
    session.refresh(period)  # this step's view, not the previous step's
    if period.status != PeriodStatus.RUNNING:
        return period.status
    status = chunk_repo.campaign_status(session, period.campaign_id)
    if status != CampaignStatus.ACTIVE:
        return f"waiting: campaign is {status}"  # resume re-enqueues the period, which goes on from here
    if not repo.mark_claimed(session, snapshot_id, utcnow()):
        return []  # a coordinator before this one claimed the segment
    snap = session.get(AllocationSnapshot, snapshot_id)
    campaign = repo.get_campaign(session, period.campaign_id)
    audience = campaign.audience  # the attribute filter and lists
    if capped:
        if waiting := contention.blocker(session, campaign, snap):
            return waiting  # the caller rolls back (the claim mark too) and tries again later
        send_repo.refresh_live_claims(session, capped, period_id, snap.segment_id)
        if period.waves is None or snap.wave == waves.LAST:  # counted once: who is still held at the last wave
            contention.record_lost(session, period, snap.segment_id, audience, capped)
    customer_ids = send_repo.eligible_customer_ids(session, snap.segment_id, period_id, capped, audience)
    if period.waves is not None and snap.wave == 1:
        customer_ids = waves.first_wave(customer_ids, period.waves["first_share"],
                                        segment_seed(period.seed, snap.segment_id, 2))
    snap.assigned = len(customer_ids)
    if not len(customer_ids):
        return []
    # wave 1 draws as a period without waves does; a later wave from its own stream
    purpose = 1 if snap.wave == 1 else 1 + 2 * snap.wave
    drawn = bandit.assign(len(customer_ids), np.asarray(snap.weights), snap.holdout_share,
                          segment_seed(period.seed, snap.segment_id, purpose))
    arm_of = np.asarray(snap.arms, dtype=np.int64)
    global_arm = np.where(drawn.arm == HOLDOUT, HOLDOUT, arm_of[np.maximum(drawn.arm, 0)])
    # the ledger rows, cut into chunks of send ids (one id range per send-window opening)
    chunk_ids, claimed = window_service.claim(session, campaign, period, snap.segment_id, customer_ids, global_arm,
                                              drawn.propensity)
    send_repo.add_claimed(session, period_id, claimed, len(chunk_ids))
    return chunk_ids


def _close_plan(period_id: int) -> str:
    """The plan's last step: every segment is claimed, so from now on the last chunk to finish
    completes the period — or this step does, when they all finished while the plan ran."""
    with session_scope() as session:
        period = chunk_repo.lock_period(session, period_id)  # the lock `close_chunk` takes too
        if period.status != PeriodStatus.RUNNING:
            return period.status
        if period.waves is not None and period.wave < waves.LAST:
            # this wave is claimed; the next one is planned by beat once its feedback had the time
            period.next_wave_at = period.next_wave_at or waves.next_wave_at(period.waves, utcnow())
            return f"waiting: wave {period.wave + 1} at {period.next_wave_at:%Y-%m-%d %H:%M} UTC"
        period.planned_at = period.planned_at or utcnow()
        if chunk_repo.count_unfinished(session, period_id) == 0:
            finish(session, period, repo.get_campaign(session, period.campaign_id))
            return PeriodStatus.COMPLETED
    return "planned"


def enqueue_chunks(chunk_ids: list[int]) -> None:
    jobs.deliver_chunks(chunk_ids)


def coordinate(period_id: int, enqueue: Callable[[list[int]], None] = enqueue_chunks) -> str:
    """Worker entry point of a period (phase 1): plan it segment by segment, handing each segment's
    chunks to `enqueue` as soon as its claim commits, so workers deliver while the rest is claimed
    (the plan alone keeps about 1.25 of 2 cores busy: benchmarks/README.md). Safe to rerun at any
    point: claimed segments are skipped, unfinished chunks are handed out again (a chunk handed
    out twice is delivered once: its lease)."""
    opened = _open_plan(period_id)
    if isinstance(opened, str):
        return opened
    pending, todo, first_run = opened
    if pending:
        enqueue(pending)
    fanned, waits = len(pending), []
    if todo:
        # One connection for the whole plan: the frequency-cap table lives on it across the commits.
        with pinned_session_scope() as session, send_repo.capped_customers(session, _frequency_cap(utcnow())) as capped:
            session.commit()
            for snapshot_id in todo:
                claimed = _claim_segment(session, period_id, snapshot_id, capped)
                if isinstance(claimed, contention.Waiting):
                    session.rollback()
                    waits.append(claimed)  # the other segments go on: a wait per segment never cycles
                    continue
                if isinstance(claimed, str):
                    session.rollback()
                    return claimed
                session.commit()
                if claimed:
                    enqueue(claimed)  # only now: the claim has committed
                fanned += len(claimed)
        if capped and (len(waits) < len(todo) or first_run):
            # claims let waiting plans go on; a first run's snapshots give rivals its rank at last
            contention.wake_waiting(period_id, enqueue_run, claimed_only=not first_run)
    if waits:
        log.info("period %s: %s", period_id, waits[0], extra={"period_id": period_id})
        return waits[0]  # the sweeper, or the plan it waits for, hands this one out again
    outcome = _close_plan(period_id)
    if outcome.startswith("waiting: wave"):
        return f"fanned out {fanned} chunks; {outcome}"
    return f"fanned out {fanned} chunks" if outcome == "planned" else outcome


def run_period(period_id: int) -> str:
    """Run a whole period in this process (tests, benchmarks): plan, then deliver every chunk in
    turn — what the workers do through `coordinate` and `sending.deliver_chunk`."""
    from campaigns.services import sending

    chunk_ids: list[int] = []
    outcome = coordinate(period_id, chunk_ids.extend)
    if outcome.startswith("waiting"):
        return outcome
    for chunk_id in chunk_ids:
        delivered = sending.deliver_chunk(chunk_id)
        if delivered.startswith("waiting") and not delivered.startswith(window_service.WAITING):
            return delivered
    with session_scope() as session:
        period = repo.get_period(session, period_id)
        return period.status if period else "missing"


def finish(session: Session, period: SendPeriod, campaign: Campaign) -> None:
    period.status = PeriodStatus.COMPLETED
    period.completed_at = utcnow()
    campaign.next_period_at = schedules.next_slot(campaign.cadence, campaign.schedule, utcnow())


def public(session: Session, period: SendPeriod, now: datetime | None = None) -> dict:
    """The period as the API and the CLI show it: counts, recent rate and ETA, failures by reason,
    and its state — stalled since when and why, when it should move and does not."""
    now = now or utcnow()
    info = period_health.progress(period, now)
    state, reason, since = _state(session, period, now)
    reason = _with_deferrals(state, reason)
    if state != "sending":
        info["eta_seconds"] = None
    return {**period.model_dump(), **info, "state": state, "state_reason": reason, "stalled_since": since,
            "failures": period_health.top_reasons(period.failures), "lost_to": period.lost_to or {},
            "windows": window_service.progress(session, period, now)}


def progress(period: SendPeriod, now: datetime | None = None) -> dict:
    """Sent / total / failed, recent rate and ETA (period_health.progress)."""
    return period_health.progress(period, now or utcnow())


def _state(session: Session, period: SendPeriod, now: datetime) -> tuple[str, str | None, datetime | None]:
    """(state, why, stalled since): completed, failed, paused, queued, planning, sending or stalled."""
    if period.status in (PeriodStatus.COMPLETED, PeriodStatus.FAILED):
        return period.status, period.error, None
    campaign = repo.get_campaign(session, period.campaign_id)
    if campaign.status != CampaignStatus.ACTIVE:
        return "paused", campaign.status_reason or f"the campaign is {campaign.status}", None
    if windowed := window_service.state(session, period, now):  # waiting for a send window, or one just opened
        return (*windowed, None)
    lease = get_settings().chunk_lease_seconds
    facts = chunk_repo.facts(session, period.id, now)
    moved = max(t for t in (period_health.last_moved(period), facts.last_update,
                            repo.last_claim_at(session, period.id)) if t is not None)
    if period.next_wave_at is not None and not (facts.held or facts.expired or facts.pending):
        if (now - period.next_wave_at).total_seconds() <= lease:  # not due yet, or due and beat on its way
            return "waiting", _wave_wait_reason(period, now), None
        moved = max(moved, period.next_wave_at)
    planned = period.planned_at or period.next_wave_at  # a wave's plan is done while it is sent
    normal = "queued" if period.status == PeriodStatus.QUEUED else "sending" if planned else "planning"
    if (now - moved).total_seconds() <= lease:
        return normal, None, None
    return "stalled", _stall_reason(period, facts, now), moved


def _wave_wait_reason(period: SendPeriod, now: datetime) -> str:
    nxt = period.wave + 1
    if now >= period.next_wave_at:
        return (f"wave {nxt} is due since {period.next_wave_at:%H:%M:%S} UTC: beat plans it within "
                f"{get_settings().beat_interval_seconds:g} s")
    rest = 1.0 - float(period.waves["first_share"])
    return (f"wave {period.wave} is sent; wave {nxt} (the other {rest:.0%} of the audience) is planned "
            f"at {period.next_wave_at:%Y-%m-%d %H:%M} UTC, from the feedback on wave {period.wave}")


def _with_deferrals(state: str, reason: str | None) -> str | None:
    """While the period is under way over SMTP, the domain groups backing off (campaigns/pacing.py):
    their mail waits, queued, which the rate and ETA alone do not explain."""
    settings = get_settings()
    if state in ("completed", "failed", "paused") or settings.delivery_backend != "smtp":
        return reason
    return "; ".join(([reason] if reason else []) + pacing.backoff_notes(settings)) or None


def _stall_reason(period: SendPeriod, facts: chunk_repo.ChunkFacts, now: datetime) -> str:
    swept = f"; handed out again at {period.redispatched_at:%H:%M:%S} UTC" if period.redispatched_at else ""
    if period.status == PeriodStatus.QUEUED:
        return f"waiting for a worker: no worker has taken the period's plan{swept}"
    if facts.held:
        return (f"chunk {facts.first_held} is held by a worker (lease until {facts.held_until:%H:%M:%S} UTC) "
                "that reports no progress")
    if facts.expired:
        return (f"the worker delivering chunk {facts.first_expired} stopped (its lease ran out at "
                f"{facts.expired_at:%H:%M:%S} UTC){swept}")
    if facts.pending:
        return f"waiting for a worker: {facts.pending} chunks not taken{swept}"
    if period.next_wave_at is not None:
        return f"waiting for a worker to plan wave {period.wave + 1}, due at {period.next_wave_at:%H:%M:%S} UTC{swept}"
    return f"waiting for a worker to finish the plan{swept}"


def halt_if_systematic(period_id: int, max_share: float, min_tried: int) -> str | None:
    """Halt the period when its failures are systematic (period_health.judge): pause the campaign
    with the reason, in its own transaction. Returns the reason, or None. Locks the campaign, then
    the period: the order every lifecycle transition takes."""
    with session_scope() as session:
        period = repo.get_period(session, period_id)
        verdict = period_health.judge(period.failures, period.sent, period.failed, max_share, min_tried)
        if not verdict.halt:
            return None
        try:
            campaign = campaign_service.transition(session, period.campaign_id, "pause")
        except Conflict:
            return None  # paused meanwhile: by a person, the guard, or another worker's halt
        period = chunk_repo.lock_period(session, period_id)
        session.refresh(period)
        reason = f"period {period.number} halted: {verdict.reason}"
        campaign.status_reason = reason[:2000]
        period.error = reason[:2000]
        period.failures = period_health.restart_window(period.failures, period.sent, period.failed)
        audit.record_operator(session, "halt", "campaign", campaign.id, {"period": period.number, "reason": reason})
        on_commit(session, metrics.observe_period_halt)
    log.warning(reason, extra={"campaign_id": campaign.id, "period_id": period_id, "tried": verdict.tried,
                               "failed": verdict.failed})
    return reason


def mark_failed(period_id: int, error: str) -> None:
    with session_scope() as session:
        period = repo.get_period(session, period_id)
        if period is not None and period.status not in (PeriodStatus.COMPLETED,):
            period.status = PeriodStatus.FAILED
            period.error = error[:2000]


def start_due_periods(now: datetime | None = None) -> list[int]:
    """Beat: start a period for every active campaign whose cadence says one is due, and plan the
    next wave of every period whose wait is over.

    Each in its own transaction, and handed out only once all are committed: no plan can begin
    before the other periods of the same tick exist, so the frequency cap shares their customers by
    the campaigns' ranks (services/contention.py), not by which plan a worker took first."""
    now = now or datetime.now(UTC)
    started = []
    with session_scope() as session:
        due = repo.due_campaign_ids(session, now)
        due_waves = repo.due_waves(session, now)
    for period_id in due_waves:  # a period's next wave: its plan goes on (a second dispatch waits, then skips)
        log.info("period %s: its next wave is due", period_id, extra={"period_id": period_id})
        enqueue_run(period_id)
    for campaign_id in due:
        try:
            with session_scope() as session:
                started.append(start_period(session, campaign_id, hand_out=False).id)
        except Conflict as exc:
            log.info("due period of campaign %s not started: %s", campaign_id, exc.detail)
    for period_id in started:
        enqueue_run(period_id)
    return started


EXPORT_COLUMNS = ["send_id", "customer_external_id", "email", "segment", "arm", "variant", "propensity", "status"]


EXPORT_SCHEMA = [("send_id", "int64"), ("customer_external_id", "string"), ("email", "string"),
                 ("segment", "string"), ("arm", "int32"), ("variant", "string"), ("propensity", "float64"),
                 ("status", "string")]


def export_parquet(session: Session, campaign_id: int, number: int, sink, page: int = 50_000) -> None:
    """Write the period's assignments as Parquet to `sink`, one row group per page (memory stays flat)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(EXPORT_SCHEMA)

    def table(rows: list[list]):
        return pa.Table.from_pydict({c: [r[i] for r in rows] for i, c in enumerate(EXPORT_COLUMNS)}, schema=schema)

    with pq.ParquetWriter(sink, schema) as writer:
        batch: list[list] = []
        for row in export_assignments(session, campaign_id, number):
            batch.append(row)
            if len(batch) == page:
                writer.write_table(table(batch))
                batch = []
        writer.write_table(table(batch))  # the remainder; an empty period still gives a valid file


def export_assignments(session: Session, campaign_id: int, number: int, page: int = 5_000):
    """Yield the period's assignments as rows (for CSV export to a CRM/ESP), page by page."""
    period = get_period(session, campaign_id, number)
    segments = {s.id: s.name for s in repo.campaign_segments(session, campaign_id)}
    keys = {v.arm: v.key for v in repo.variants(session, campaign_id)}
    keys[HOLDOUT] = "control"
    after = 0
    while rows := send_repo.period_assignments(session, period.id, after, page):
        for r in rows:
            yield [r.id, r.external_id, r.email, segments.get(r.segment_id), r.arm, keys[r.arm], r.propensity, r.status]
        after = rows[-1].id
