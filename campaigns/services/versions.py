"""Model versions: a person overrides a segment's allocation, and says why.

Every action is a row of `model_action` (who: the API key's name and role; why: a reason). The
latest action of a (campaign, segment) is the segment's mode, applied by every period planned after
it commits (a period already planned keeps its stored snapshot):

- promote:  weight 1.0 on one arm (the holdout keeps its share: it is drawn before the arms);
- rollback: the stored weights of an earlier period's allocation snapshot (pinned);
- uniform:  equal weights over the segment's eligible arms;
- resume:   back to the bandit's own allocation (learning).

The planner still computes the posterior for every segment (P(best) and the bandit's weights go into
the snapshot's diagnostics); `apply_mode` then replaces the weights of segments under a manual mode.
"""

from dataclasses import dataclass

import numpy as np
from sqlmodel import Session

from campaigns import design
from campaigns.errors import Conflict, InvalidInput, NotFound
from campaigns.models import AllocationSnapshot, ApiKey, CampaignStatus, ModelAction, Segment, utcnow
from campaigns.repositories import campaigns as campaign_repo
from campaigns.repositories import versions as repo
from campaigns.schemas import PromoteIn, RollbackIn
from campaigns.services import campaigns as campaign_service

ALL = "all"  # the path segment that acts on every segment of the campaign
MODE_OF_ACTION = {"promote": "promoted", "rollback": "pinned", "uniform": "uniform", "resume": "learning"}
MANUAL_STAGES = frozenset({"promoted", "pinned", "uniform"})


# --- the pure part: what a mode does to a segment's weights -------------------------------------------


def manual_weights(action, eligible_arms: list[int], snapshot_of_period=None) -> np.ndarray | None:
    """The weights (aligned with `eligible_arms`) a manual mode imposes, or None while learning.

    `action` has `.action` and `.arm` (a ModelAction); `snapshot_of_period` has `.arms` and
    `.weights` (the pinned AllocationSnapshot) for a rollback."""
    kind = None if action is None else action.action
    n = len(eligible_arms)
    if kind == "promote" and action.arm in eligible_arms:
        w = np.zeros(n)
        w[eligible_arms.index(action.arm)] = 1.0
        return w
    if kind == "rollback" and snapshot_of_period is not None:
        stored = dict(zip(snapshot_of_period.arms, snapshot_of_period.weights, strict=True))
        w = np.array([float(stored.get(a, 0.0)) for a in eligible_arms])
        # The eligible arms of a segment never change after the draft, so the pinned weights map one
        # to one; renormalising only guards against float drift in the stored JSON.
        return w / w.sum() if w.sum() > 0 else np.full(n, 1.0 / n)
    if kind == "uniform":
        return np.full(n, 1.0 / n)
    return None  # resume, no action, or a promote/rollback that cannot apply (refused at the API)


def describe(action: ModelAction, variant_key: str | None, eligible: int | None = None) -> str:
    if action.action == "promote":
        return f"promoted arm {action.arm}" + (f" ({variant_key})" if variant_key else "")
    if action.action == "rollback":
        return f"pinned to the weights of period {action.pinned_period}"
    if action.action == "uniform":
        return f"uniform over {eligible} eligible variants" if eligible else "uniform over the eligible variants"
    return "resumed learning"


@dataclass(frozen=True)
class SegmentMode:
    """What the planner needs to apply one segment's manual mode."""

    action: ModelAction
    pinned: AllocationSnapshot | None
    variant_key: str | None


def apply_mode(mode: SegmentMode | None, eligible: list[int], weights: np.ndarray, stage: str, reason: str | None):
    """(weights, stage, reason, extra diagnostics) of a segment's snapshot: the bandit's own
    allocation, or the manual mode's weights with the bandit's kept under diagnostics["manual"]."""
    manual = None if mode is None else manual_weights(mode.action, eligible, mode.pinned)
    if manual is None:
        return weights, stage, reason, {}
    a = mode.action
    detail = describe(a, mode.variant_key, len(eligible))
    diagnostics = {
        "mode": MODE_OF_ACTION[a.action], "action_id": a.id, "arm": a.arm, "pinned_period": a.pinned_period,
        "by": a.key_name, "role": a.key_role, "reason": a.reason,
        "bandit_stage": stage, "bandit_reason": reason, "bandit_weights": [float(x) for x in weights],
    }
    why = f"{detail} by {a.key_name} ({a.key_role}): {a.reason}"
    return manual, MODE_OF_ACTION[a.action], why, {"manual": diagnostics}


def planning_modes(session: Session, campaign_id: int, variant_keys: list[str]) -> dict[int, SegmentMode]:
    """Segment id -> its manual mode, for the segments not learning (two queries)."""
    actions = {sid: a for sid, a in repo.latest_actions(session, campaign_id).items() if a.action != "resume"}
    pins = {sid: a.pinned_period for sid, a in actions.items() if a.action == "rollback"}
    pinned = repo.pinned_snapshots(session, campaign_id, pins)
    return {
        sid: SegmentMode(a, pinned.get(sid), variant_keys[a.arm] if a.arm is not None else None)
        for sid, a in actions.items()
    }


# --- the API's service functions -------------------------------------------------------------------


@dataclass
class _Target:
    campaign_id: int
    variants: list  # Variant rows, by arm
    segments: list[Segment]
    exclusions: list


def _target(session: Session, campaign_id: int, segment: str) -> _Target:
    campaign = campaign_service.get(session, campaign_id, for_update=True)  # serialises with `complete`
    if campaign.status == CampaignStatus.COMPLETED:
        raise Conflict(f"campaign {campaign_id} is completed: its allocation can no longer change")
    segments = campaign_repo.campaign_segments(session, campaign_id)
    if segment != ALL:
        segments = [s for s in segments if s.name == segment]
        if not segments:
            raise NotFound(f"campaign {campaign_id} does not target a segment named '{segment}'")
    return _Target(campaign_id, campaign_repo.variants(session, campaign_id), segments, campaign.exclusions)


def _record(session: Session, target: _Target, actor: ApiKey, action: str, reason: str, **fields) -> list[dict]:
    now = utcnow()
    rows = [
        ModelAction(campaign_id=target.campaign_id, segment_id=s.id, action=action, reason=reason,
                    key_name=actor.name, key_role=actor.role, created_at=now, **fields)
        for s in target.segments
    ]
    session.add_all(rows)
    session.flush()
    keys = [v.key for v in target.variants]
    names = {s.id: s.name for s in target.segments}
    return [_public_action(a, names[a.segment_id], keys) for a in rows]


def promote(session: Session, campaign_id: int, segment: str, body: PromoteIn, actor: ApiKey) -> list[dict]:
    if (body.arm is None) == (body.variant_key is None):
        raise InvalidInput("arm", "give exactly one of `arm` or `variant_key`")
    target = _target(session, campaign_id, segment)
    loc = "arm" if body.arm is not None else "variant_key"
    if body.arm is not None:
        if body.arm >= len(target.variants):
            raise InvalidInput("arm", f"campaign {campaign_id} has no arm {body.arm} "
                                      f"(arms 0 to {len(target.variants) - 1})")
        arm = body.arm
    else:
        by_key = {v.key: v.arm for v in target.variants}
        if body.variant_key not in by_key:
            raise InvalidInput("variant_key", f"campaign {campaign_id} has no variant '{body.variant_key}'")
        arm = by_key[body.variant_key]
    params = [v.params for v in target.variants]
    for s in target.segments:
        if arm not in design.eligible_arms(params, target.exclusions, s.name):
            raise InvalidInput(loc, f"arm {arm} ({target.variants[arm].key}) is excluded for segment '{s.name}'")
    return _record(session, target, actor, "promote", body.reason, arm=arm)


def rollback(session: Session, campaign_id: int, segment: str, body: RollbackIn, actor: ApiKey) -> list[dict]:
    if (body.to_period is None) == (body.to is None):
        raise InvalidInput("to_period", "give exactly one of `to_period` (a period number) or `to`: \"uniform\"")
    target = _target(session, campaign_id, segment)
    if body.to == "uniform":
        return _record(session, target, actor, "uniform", body.reason)
    if campaign_repo.period_by_number(session, campaign_id, body.to_period) is None:
        raise InvalidInput("to_period", f"campaign {campaign_id} has no period {body.to_period}")
    snaps = repo.snapshots_of_period(session, campaign_id, body.to_period)
    for s in target.segments:
        if s.id not in snaps:
            raise InvalidInput("to_period", f"period {body.to_period} has no allocation snapshot for segment "
                                            f"'{s.name}' (it has not been planned yet)")
    return _record(session, target, actor, "rollback", body.reason, pinned_period=body.to_period)


def resume(session: Session, campaign_id: int, segment: str, reason: str, actor: ApiKey) -> list[dict]:
    return _record(session, _target(session, campaign_id, segment), actor, "resume", reason)


def _public_action(a: ModelAction, segment: str, keys: list[str]) -> dict:
    key = keys[a.arm] if a.arm is not None and a.arm < len(keys) else None
    return {
        "id": a.id, "created_at": a.created_at, "key_name": a.key_name, "key_role": a.key_role,
        "action": a.action, "segment": segment, "arm": a.arm, "variant_key": key,
        "pinned_period": a.pinned_period, "detail": describe(a, key), "reason": a.reason,
    }


def versions(session: Session, campaign_id: int) -> dict:
    """The timeline of every action, oldest first, and each targeted segment's current mode."""
    campaign_service.get(session, campaign_id)
    keys = [v.key for v in campaign_repo.variants(session, campaign_id)]
    timeline = [_public_action(a, name, keys) for a, name in repo.timeline(session, campaign_id)]
    latest = {}
    for a in timeline:
        latest[a["segment"]] = a
    segments = []
    for s in campaign_repo.campaign_segments(session, campaign_id):
        a = latest.get(s.name)
        if a is None:
            segments.append({"segment": s.name, "mode": "learning", "detail": "learning", "since": None})
            continue
        mode = MODE_OF_ACTION[a["action"]]
        segments.append({
            "segment": s.name, "mode": mode, "arm": a["arm"], "variant_key": a["variant_key"],
            "pinned_period": a["pinned_period"], "detail": "learning" if mode == "learning" else a["detail"],
            "since": a["created_at"], "action_id": a["id"],
        })
    return {"campaign_id": campaign_id, "segments": segments, "timeline": timeline}
