"""A period's health: how fast it goes now, whether it is stalled and why, and what failed.

Rate. `send_period.recent_rate` is a decayed count of settled sends per second. Each committed batch
of n sends, dt seconds after the period's previous progress, sets

    rate ← rate · τ/(τ + dt) + n/(τ + dt)

which for a steady stream of n sends every Δ seconds settles at exactly n/Δ, and forgets a burst
after a few τ. Read at time t it is decayed once more by τ/(τ + t − last progress), so a period that
stopped moving shows its rate falling to 0 instead of the average since it started. τ/(τ + dt)
stands in for e^(−dt/τ): the update is then plain arithmetic, which SQLite and PostgreSQL both do
in the UPDATE itself, under the row lock, so concurrent workers never lose one another's counts.

Stalls. A period that should be moving (queued or running, campaign active) but has not moved for
longer than a chunk lease is stalled; `diagnose` says since when and why, from the chunks' state.

Failures. Every failed send has a reason (`send.error`). A period keeps a summary of them by reason
(counts and a few example customers), merged batch by batch; `judge` decides when the failures are
systematic — more than MAB_FAILURE_HALT_SHARE of the sends tried since the period last resumed,
once MAB_FAILURE_HALT_MIN_TRIED were tried — and the period halts: its campaign pauses with the
top reason, before most of the audience is spent. Suppressions found at send time are recorded
but never judged (a customer who unsubscribed meanwhile is not a fault of the campaign).
"""

import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from campaigns.models import PeriodStatus

RATE_TAU_SECONDS = 30.0
MAX_REASONS = 20  # distinct reasons kept per period; the rest are summed under OTHER
MAX_EXAMPLES = 3
OTHER = "other reasons"
SUPPRESSED = "suppressed:"

_LONG_NUMBER = re.compile(r"\d{4,}")  # sizes, ids, timestamps: not SMTP codes (3 digits)
# an address, or the mask an erased customer's address became (services/privacy.py)
_ADDRESS = re.compile(r"<?[^\s<>@'\"]+@[^\s<>@'\"]+>?|<?<erased>>?")


def reason_of(error: str | None) -> str:
    """The reason a failure is counted under: its message without what differs per customer."""
    text = _ADDRESS.sub("<address>", error or "unknown error")
    return _LONG_NUMBER.sub("N", text)[:200]


def scrub(summary: dict | None, external_id: str, mask) -> dict | None:
    """The summary without an erased customer: not among the examples, nothing of theirs in a reason."""
    if not summary:
        return summary
    reasons: dict[str, dict] = {}
    for reason, entry in summary.get("reasons", {}).items():
        kept = reasons.setdefault(mask(reason), {"count": 0, "examples": []})
        kept["count"] += entry["count"]
        kept["examples"] += [x for x in entry["examples"] if x != external_id]
    return {**summary, "reasons": reasons}


def is_judged(reason: str) -> bool:
    return not reason.startswith(SUPPRESSED)


def summarize(results: list[dict]) -> dict[str, dict]:
    """A batch's failures by reason: {reason: {"count": n, "examples": [external ids]}}."""
    out: dict[str, dict] = {}
    for r in results:
        if r["new_status"] == "sent":
            continue
        entry = out.setdefault(reason_of(r.get("err")), {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < MAX_EXAMPLES and r.get("xid") is not None:
            entry["examples"].append(r["xid"])
    return out


def merge(summary: dict | None, batch: dict[str, dict]) -> dict:
    """The period's summary with a batch's failures added; at most MAX_REASONS reasons, the rest
    under OTHER. `judged` counts the failures the halt rule looks at."""
    summary = {"reasons": {}, "judged": 0, "window": {"tried": 0, "judged": 0}, **(summary or {})}
    reasons = {k: {"count": v["count"], "examples": list(v["examples"])} for k, v in summary["reasons"].items()}
    for reason, entry in batch.items():
        key = reason if reason in reasons or len(reasons) < MAX_REASONS else OTHER
        kept = reasons.setdefault(key, {"count": 0, "examples": []})
        kept["count"] += entry["count"]
        kept["examples"] = (kept["examples"] + entry["examples"])[:MAX_EXAMPLES]
        if is_judged(reason):
            summary["judged"] += entry["count"]
    return {**summary, "reasons": reasons}


def top_reasons(summary: dict | None, n: int = MAX_REASONS) -> list[dict]:
    reasons = (summary or {}).get("reasons", {})
    ranked = sorted(reasons.items(), key=lambda kv: -kv[1]["count"])[:n]
    return [{"reason": k, "count": v["count"], "examples": v["examples"]} for k, v in ranked]


@dataclass(frozen=True)
class Verdict:
    halt: bool
    tried: int
    failed: int
    share: float
    reason: str = ""


def judge(summary: dict | None, sent: int, failed: int, max_share: float, min_tried: int) -> Verdict:
    """Whether the failures since the period last resumed are systematic. Pure."""
    window = (summary or {}).get("window", {"tried": 0, "judged": 0})
    tried = sent + failed - window["tried"]
    bad = (summary or {}).get("judged", 0) - window["judged"]
    share = bad / tried if tried > 0 else 0.0
    if max_share <= 0 or tried < min_tried or share <= max_share:
        return Verdict(False, tried, bad, share)
    judged = [r for r in top_reasons(summary) if is_judged(r["reason"])]
    top = judged[0]["reason"] if judged else "unknown"
    return Verdict(True, tried, bad, share, f"{share:.0%} of the {tried:,} sends tried failed (over "
                                            f"{max_share:.0%}); top reason: {top}")


def restart_window(summary: dict | None, sent: int, failed: int) -> dict:
    """After a halt, judge afresh from here: the resumed period is not held to its old failures."""
    summary = {"reasons": {}, "judged": 0, **(summary or {})}
    return {**summary, "window": {"tried": sent + failed, "judged": summary["judged"]}}


def decayed_rate(rate: float, last_epoch: float | None, now_epoch: float) -> float:
    if last_epoch is None:
        return 0.0
    return rate * RATE_TAU_SECONDS / (RATE_TAU_SECONDS + max(now_epoch - last_epoch, 0.0))


def last_moved(period) -> datetime | None:
    """When the period last did something a person could see: progress, planning, or being created."""
    moved = [t for t in (period.created_at, period.started_at, period.planned_at) if t is not None]
    if period.progress_epoch is not None:
        moved.append(datetime.fromtimestamp(period.progress_epoch, UTC))
    return max(moved) if moved else None


def progress(period, now: datetime) -> dict:
    """Sent / total / failed, the recent rate and an ETA from it: what the API and `mab send` show."""
    done = period.sent + period.failed
    remaining = max(period.total - done, 0)
    rate = eta = None
    if period.status == PeriodStatus.COMPLETED and period.started_at and period.completed_at:
        elapsed = (period.completed_at - period.started_at).total_seconds()
        rate = done / elapsed if elapsed > 0 else None  # a finished period: its average
    elif period.started_at and done:
        elapsed = (now - period.started_at).total_seconds()
        if elapsed < RATE_TAU_SECONDS:  # the decayed rate is still warming up: the average is truer
            rate = done / elapsed if elapsed > 0 else None
        else:
            rate = decayed_rate(period.recent_rate or 0.0, period.progress_epoch, now.timestamp())
        if rate and period.status == PeriodStatus.RUNNING and period.planned_at:  # total is final
            eta = remaining / rate
    return {"rate_per_second": rate, "eta_seconds": eta, "remaining": remaining}


def failure_counts(summary: dict | None) -> Counter:
    return Counter({r["reason"]: r["count"] for r in top_reasons(summary)})
