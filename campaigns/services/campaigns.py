"""Campaign definition and lifecycle: draft -> active <-> paused -> completed (forward only)."""

from sqlmodel import Session

import bandit
from campaigns import design, economics, schedules, waves
from campaigns.db import on_commit
from campaigns.errors import Conflict, InvalidInput, NotFound
from campaigns.models import Campaign, CampaignSegment, CampaignStatus, PeriodStatus, Variant, utcnow
from campaigns.rendering import static_links, trial_render
from campaigns.repositories import campaigns as repo
from campaigns.repositories import customers as customer_repo
from campaigns.schemas import CampaignCreate, CampaignUpdate, TemplateIn
from campaigns.services import audience, audit, limits, send_windows
from campaigns.settings import get_settings

# Which lifecycle action may move a campaign from which status.
TRANSITIONS = {
    "start": ({CampaignStatus.DRAFT}, CampaignStatus.ACTIVE),
    "pause": ({CampaignStatus.ACTIVE}, CampaignStatus.PAUSED),
    "resume": ({CampaignStatus.PAUSED}, CampaignStatus.ACTIVE),
    "complete": ({CampaignStatus.ACTIVE, CampaignStatus.PAUSED}, CampaignStatus.COMPLETED),
}


def get(session: Session, campaign_id: int, *, for_update: bool = False) -> Campaign:
    campaign = repo.get_campaign(session, campaign_id, for_update=for_update)
    if campaign is None:
        raise NotFound(f"no campaign with id {campaign_id}")
    return campaign


def to_public(session: Session, campaign: Campaign) -> dict:
    return {
        **campaign.model_dump(),
        "segments": [s.name for s in repo.campaign_segments(session, campaign.id)],
        "variant_count": repo.variant_count(session, campaign.id),
    }


def _validated_design(session: Session, data: CampaignCreate) -> tuple[list[dict], dict[str, int], dict]:
    """Everything about a new campaign that needs checking, before anything is written."""
    limits.check_template(data.template)  # size first: nothing oversized gets compiled
    design.validate_factors(data.factors)
    known = customer_repo.segments_by_name(session)
    for i, name in enumerate(data.segments):
        if name not in known:
            raise InvalidInput(f"segments[{i}]", f"no segment named '{name}'")
    if len(set(data.segments)) != len(data.segments):
        raise InvalidInput("segments", "a segment is listed twice")
    exclusions = [r.model_dump(exclude_none=True) for r in data.exclusions]
    design.validate_exclusions(data.factors, exclusions, set(data.segments))

    cap = get_settings().max_variants_per_campaign
    grid_size = 1
    for levels in data.factors.values():
        grid_size *= len(levels)
    if grid_size > cap:
        raise InvalidInput("factors", f"{grid_size} variants exceed the cap of {cap} (MAB_MAX_VARIANTS_PER_CAMPAIGN)")
    variants = design.variant_grid(data.factors, exclusions)
    if not variants:
        raise InvalidInput("exclusions", "the exclusions remove every variant: the grid is empty")
    for name in data.segments:
        if not design.eligible_arms(variants, exclusions, name):
            raise InvalidInput("exclusions", f"segment '{name}' has no variant left after exclusions")

    baseline = data.baseline or {f: levels[0] for f, levels in data.factors.items()}
    for factor, level in baseline.items():
        if factor not in data.factors:
            raise InvalidInput(f"baseline.{factor}", f"unknown factor '{factor}'")
        if level not in data.factors[factor]:
            raise InvalidInput(f"baseline.{factor}", f"unknown level '{level}'")
    if set(baseline) != set(data.factors):
        missing = ", ".join(sorted(set(data.factors) - set(baseline)))
        raise InvalidInput("baseline", f"the baseline needs a level for every factor (missing: {missing})")

    # Trial-render the baseline and every distinct level at least once: an undefined variable or a
    # template that breaks on some level is refused now, not in the middle of a send.
    trial_render(data.template.model_dump(), set(data.factors), [baseline, *variants])
    schedules.normalize(data.cadence, _schedule(data))
    _audience(data)
    return variants, {n: known[n] for n in data.segments}, baseline


def _audience(data: CampaignCreate | CampaignUpdate) -> dict | None:
    """The stored audience (dates as ISO text), or a 422 naming the condition that cannot hold."""
    if data.audience is None:
        return None
    for i, c in enumerate(data.audience.filter):
        where = f"audience.filter[{i}]"
        if all(getattr(c, op) is None for op in ("equals", "one_of", "min", "max", "since", "until")):
            raise InvalidInput(where, "a condition needs an operator: equals, one_of, min, max, since or until")
        if c.min is not None and c.max is not None and c.min > c.max:
            raise InvalidInput(f"{where}.max", "max is below min: no customer can match")
        if c.since is not None and c.until is not None and c.since > c.until:
            raise InvalidInput(f"{where}.until", "until is before since: no customer can match")
    audience = data.audience.model_dump(mode="json", exclude_none=True)
    return audience if audience["filter"] or audience["lists"] else None


def _waves(data: CampaignCreate | CampaignUpdate) -> dict | None:
    return data.waves.model_dump() if data.waves is not None else None


def _schedule(data: CampaignCreate | CampaignUpdate) -> dict | None:
    return data.schedule.model_dump(exclude_none=True) if data.schedule is not None else None


def create(session: Session, data: CampaignCreate) -> Campaign:
    data, windows, window_tz = send_windows.with_windows(data)  # the windows join the factors
    variants, segment_ids, baseline = _validated_design(session, data)
    defaults = bandit.AllocationConfig()
    campaign = Campaign(
        name=data.name,
        objective=data.objective,
        factors=data.factors,
        exclusions=[r.model_dump(exclude_none=True) for r in data.exclusions],
        baseline=baseline,
        holdout_share=data.holdout_share,
        cadence=data.cadence,
        schedule=schedules.normalize(data.cadence, _schedule(data)),
        audience=_audience(data),
        landing_url=str(data.landing_url),
        subject_template=data.template.subject,
        html_template=data.template.html,
        links=static_links(data.template.html),
        text_template=data.template.text,
        exploration_floor=defaults.floor if data.exploration_floor is None else data.exploration_floor,
        burn_in_min_sends=(
            defaults.burn_in_min_sends if data.burn_in_min_sends is None else data.burn_in_min_sends
        ),
        model=data.model,
        waves=waves.normalize(_waves(data), data.cadence, _schedule(data), windows),
        economics=economics.validate(data.objective, data.model, data.economics, data.factors),
        send_windows=windows,
        send_window_timezone=window_tz,
        priority=data.priority,
    )
    session.add(campaign)
    session.flush()
    session.add_all(CampaignSegment(campaign_id=campaign.id, segment_id=sid) for sid in segment_ids.values())
    session.add_all(
        Variant(campaign_id=campaign.id, arm=i, key=design.variant_key(p), params=p) for i, p in enumerate(variants)
    )
    session.flush()
    return campaign


def update(session: Session, campaign_id: int, data: CampaignUpdate) -> Campaign:
    campaign = get(session, campaign_id, for_update=True)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if campaign.status == CampaignStatus.PAUSED and set(changes) == {"template"}:
        return fix_template(session, campaign, data.template)
    if set(changes) == {"priority"}:  # a ranking, not the design: any status, from the next claim on
        campaign.priority, campaign.updated_at = changes["priority"], utcnow()
        session.flush()
        return campaign
    if campaign.status != CampaignStatus.DRAFT:
        raise Conflict(f"campaign {campaign_id} is {campaign.status}: only drafts can be edited "
                       "(a paused campaign accepts a new template alone)")
    limits.check_template(data.template)
    if "template" in changes:
        variants = [v.params for v in repo.variants(session, campaign_id)]
        trial_render(changes["template"], set(campaign.factors), [campaign.baseline, *variants])
        t = changes.pop("template")
        campaign.subject_template, campaign.html_template, campaign.text_template = t["subject"], t["html"], t["text"]
        campaign.links = static_links(t["html"])
    if "cadence" in changes or "schedule" in changes:
        cadence = changes.pop("cadence", campaign.cadence)
        given = _schedule(data) if "schedule" in changes else (campaign.schedule if cadence == campaign.cadence
                                                                    else None)
        changes.pop("schedule", None)
        campaign.cadence, campaign.schedule = cadence, schedules.normalize(cadence, given)
    if "waves" in changes or campaign.waves is not None:
        changes["waves"] = waves.normalize(_waves(data) if "waves" in changes else campaign.waves,
                                           campaign.cadence, campaign.schedule, campaign.send_windows)
    if "audience" in changes:
        changes["audience"] = _audience(data)
    if "economics" in changes:
        changes["economics"] = economics.validate(campaign.objective, campaign.model, data.economics, campaign.factors)
    if "landing_url" in changes:
        changes["landing_url"] = str(changes["landing_url"])
    for field, value in changes.items():
        setattr(campaign, field, value)
    campaign.updated_at = utcnow()
    session.flush()
    return campaign


def fix_template(session: Session, campaign: Campaign, new: TemplateIn) -> Campaign:
    """A paused campaign's new template: checked like a new one (trial render of every variant, then
    against a sample of the real audience), stored as the next template version and recorded in the
    audit log. The design (factors, segments, objective) is unchanged, so learning continues; every
    email rendered from now on, the rest of an interrupted period included, uses the new version."""
    limits.check_template(new)
    template = new.model_dump()
    variants = [v.params for v in repo.variants(session, campaign.id)]
    trial_render(template, set(campaign.factors), [campaign.baseline, *variants])
    audience.require_renderable(session, campaign, template)
    previous = campaign.template_version
    campaign.subject_template, campaign.html_template, campaign.text_template = (
        template["subject"], template["html"], template["text"])
    campaign.links = static_links(template["html"])
    campaign.template_version = previous + 1
    campaign.updated_at = utcnow()
    inflight = repo.in_flight_period(session, campaign.id)
    first = inflight.number if inflight is not None else repo.last_period_number(session, campaign.id) + 1
    audit.record_operator(session, "template_version", "campaign", campaign.id, {
        "template_version": campaign.template_version, "previous_version": previous, "from_period": first,
        "in_flight_period": inflight.number if inflight is not None else None})
    session.flush()
    return campaign


def dry_run(session: Session, campaign_id: int) -> dict:
    """The pre-start check, any time: the templates rendered for a sample of the real audience."""
    campaign = get(session, campaign_id)
    return {**audience.check(session, campaign), **{"reach": audience.reach(session, campaign)}}


def audience_reach(session: Session, campaign_id: int) -> dict:
    return audience.reach(session, get(session, campaign_id))


def start(session: Session, campaign_id: int, send_now: bool) -> Campaign:
    """Start: refused (422) when the templates fail for sampled targeted customers, before anything
    is sent. The first period goes out at the schedule's next slot, or now with `send_now`."""
    campaign = get(session, campaign_id, for_update=True)
    if campaign.status == CampaignStatus.DRAFT:
        audience.require_renderable(session, campaign)
    campaign = transition(session, campaign_id, "start")
    if send_now:
        from campaigns.services import periods  # periods imports this module

        periods.start_period(session, campaign_id)
    return campaign


def act(session: Session, campaign_id: int, action: str, send_now: bool = False) -> Campaign:
    if action == "start":
        return start(session, campaign_id, send_now)
    if send_now:
        raise InvalidInput("send_now", "only `start` takes send_now (a running campaign: POST …/periods)")
    return transition(session, campaign_id, action)


def transition(session: Session, campaign_id: int, action: str) -> Campaign:
    allowed, target = TRANSITIONS[action]
    campaign = get(session, campaign_id, for_update=True)
    if campaign.status not in allowed:
        raise Conflict(
            f"cannot {action} campaign {campaign_id}: it is {campaign.status} "
            f"(allowed from: {', '.join(sorted(allowed))})"
        )
    campaign.status = target
    campaign.status_reason = None  # a person's lifecycle action clears the guard's reason
    campaign.updated_at = utcnow()
    if action == "start":
        campaign.started_at = utcnow()
        # never at the start itself: the first period is the schedule's next slot (or asked for)
        campaign.next_period_at = schedules.next_slot(campaign.cadence, campaign.schedule, utcnow())
    if action == "complete":
        inflight = repo.in_flight_period(session, campaign_id)
        if inflight is not None:  # its remaining queued sends will never go out: say so on the period
            inflight.status = PeriodStatus.FAILED
            inflight.error = "stopped: the campaign was completed before this period finished"
    if action == "resume":
        from campaigns.services import periods  # periods imports this module

        if campaign.next_period_at is not None and campaign.next_period_at <= utcnow():
            # a slot missed while paused is not made up at once: the next one is
            campaign.next_period_at = schedules.next_slot(campaign.cadence, campaign.schedule, utcnow())

        inflight = repo.in_flight_period(session, campaign_id)
        if inflight is not None:
            period_id = inflight.id
            if inflight.error and " halted: " in inflight.error:
                inflight.error = None  # its failures stay in `failures`; the halt is over
            on_commit(session, lambda: periods.enqueue_resume(period_id))
    session.flush()
    return campaign


def overview(session: Session) -> list[dict]:
    """Every campaign with its status and newest period: what `mab campaigns` lists."""
    last = repo.last_periods(session)
    rows = []
    for campaign in repo.all_campaigns(session):
        period = last.get(campaign.id)
        rows.append({**to_public(session, campaign),
                     "last_period": None if period is None else {
                         "number": period.number, "status": period.status, "sent": period.sent,
                         "failed": period.failed, "total": period.total,
                         "created_at": period.created_at, "completed_at": period.completed_at,
                         "next_wave_at": period.next_wave_at}})
    return rows
