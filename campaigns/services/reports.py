"""The lift report: control (holdout, the old single email) against the bandit's variants.

All counting happens in SQL (one GROUP BY over the ledger); Python only combines a few hundred
(segment, arm) rows. Intervals are Wald 95% intervals on the difference of per-send means:
with thousands of sends per group the normal approximation is accurate.
"""

import math
from collections import defaultdict

from sqlmodel import Session

from campaigns.models import EventStatus
from campaigns.repositories import campaigns as repo
from campaigns.repositories import events as event_repo
from campaigns.repositories import sends as send_repo
from campaigns.services import campaigns as campaign_service

Z95 = 1.959963984540054
METRICS = ("click_rate", "conversion_rate", "revenue_per_send")


def _zero() -> dict:
    return {"sends": 0, "clicks": 0, "conversions": 0, "revenue": 0.0, "revenue_sq": 0.0}


def _add(into: dict, row) -> None:
    for k in into:
        into[k] += getattr(row, k) if not isinstance(row, dict) else row[k]


def _mean_var(group: dict, metric: str) -> tuple[float, float]:
    """Per-send mean of the metric and the variance of that mean."""
    n = group["sends"]
    if n == 0:
        return math.nan, math.nan
    if metric == "revenue_per_send":
        mean = group["revenue"] / n
        var = max(group["revenue_sq"] / n - mean**2, 0.0) * n / max(n - 1, 1)
    else:
        mean = group["clicks" if metric == "click_rate" else "conversions"] / n
        var = mean * (1 - mean)
    return mean, var / n


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) or math.isinf(x) else x


def lift(control: dict, bandit: dict) -> dict:
    out = {}
    for metric in METRICS:
        c_mean, c_var = _mean_var(control, metric)
        b_mean, b_var = _mean_var(bandit, metric)
        diff = b_mean - c_mean
        half = Z95 * math.sqrt(c_var + b_var) if not math.isnan(c_var + b_var) else math.nan
        rel = diff / c_mean if c_mean and not math.isnan(c_mean) else math.nan
        out[metric] = {
            "control": _finite(c_mean),
            "bandit": _finite(b_mean),
            "absolute_lift": _finite(diff),
            "absolute_lift_ci95": [_finite(diff - half), _finite(diff + half)],
            "relative_lift": _finite(rel),
        }
    return out


def _public(group: dict) -> dict:
    return {k: v for k, v in group.items() if k != "revenue_sq"}


def lift_report(session: Session, campaign_id: int) -> dict:
    campaign = campaign_service.get(session, campaign_id)
    segments = {s.id: s.name for s in repo.campaign_segments(session, campaign_id)}
    variants = {v.arm: v for v in repo.variants(session, campaign_id)}
    latest = repo.latest_snapshots(session, campaign_id)
    weights = {
        seg: dict(zip(snap.arms, snap.weights, strict=True)) for seg, snap in latest.items()
    }

    per_segment = defaultdict(lambda: {"control": _zero(), "bandit": _zero(), "arms": []})
    overall = {"control": _zero(), "bandit": _zero()}
    for row in send_repo.arm_aggregates(session, campaign_id):
        seg = per_segment[row.segment_id]
        side = "control" if row.arm < 0 else "bandit"
        _add(seg[side], row)
        _add(overall[side], row)
        if row.arm >= 0:
            seg["arms"].append(
                {
                    "arm": row.arm,
                    "variant": variants[row.arm].key,
                    "params": variants[row.arm].params,
                    **_public({k: getattr(row, k) for k in _zero()}),
                    "click_rate": row.clicks / row.sends,
                    "conversion_rate": row.conversions / row.sends,
                    "revenue_per_send": row.revenue / row.sends,
                    "current_weight": weights.get(row.segment_id, {}).get(row.arm),
                }
            )

    segment_reports = []
    for seg_id, name in segments.items():
        seg = per_segment[seg_id]
        arms = sorted(seg["arms"], key=lambda a: -a[f"{_objective_metric(campaign.objective)}"])
        snap = latest.get(seg_id)
        segment_reports.append(
            {
                "segment": name,
                "control": _public(seg["control"]),
                "bandit": _public(seg["bandit"]),
                "lift": lift(seg["control"], seg["bandit"]),
                "arms": arms,
                "allocation": None
                if snap is None
                else {
                    "period": snap.version,
                    "stage": snap.stage,
                    "reason": snap.reason,
                    "top": _top_weights(snap, variants),
                },
            }
        )
    events = event_repo.event_counts(session, campaign_id)
    return {
        "campaign_id": campaign_id,
        "name": campaign.name,
        "status": campaign.status,
        "objective": campaign.objective,
        "holdout_share": campaign.holdout_share,
        "periods": len(repo.periods(session, campaign_id)),
        "overall": {
            "control": _public(overall["control"]),
            "bandit": _public(overall["bandit"]),
            "lift": lift(overall["control"], overall["bandit"]),
        },
        "segments": segment_reports,
        "events": {
            "applied": sum(n for (_, s), n in events.items() if s == EventStatus.APPLIED),
            "unattributed": sum(n for (_, s), n in events.items() if s == EventStatus.UNATTRIBUTED),
        },
    }


def _objective_metric(objective: str) -> str:
    return {"click": "click_rate", "conversion": "conversion_rate", "revenue": "revenue_per_send"}[objective]


def _top_weights(snap, variants, n: int = 5) -> list[dict]:
    ranked = sorted(zip(snap.arms, snap.weights, strict=True), key=lambda aw: -aw[1])[:n]
    return [{"arm": a, "variant": variants[a].key, "weight": w} for a, w in ranked]
