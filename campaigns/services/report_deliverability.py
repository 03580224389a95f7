"""The report's deliverability section: bounce, complaint and unsubscribe rates per campaign, per
segment and per variant (a variant that draws complaints is a bad variant, whatever it converts).

- bounce rate = (refused at send time + bounced after delivery) / (delivered + refused): what a
  mailbox provider sees of the list's hygiene;
- complaint rate = spam complaints / delivered: Gmail and Yahoo require bulk senders to stay below
  0.3% and recommend below 0.1% (COMPLAINT_LIMIT, COMPLAINT_TARGET);
- unsubscribe rate = unsubscribes / delivered.
"""

from collections import defaultdict

from sqlmodel import Session

from campaigns.repositories import reports as report_repo

COMPLAINT_LIMIT = 0.003
COMPLAINT_TARGET = 0.001
HOLDOUT_LABEL = "old email (holdout)"
TOP_VARIANTS = 20
COUNTS = ("delivered", "refused", "bounced", "complaints", "unsubscribes")


def _rates(c: dict) -> dict:
    attempted = c["delivered"] + c["refused"]
    per_delivered = (lambda n: n / c["delivered"]) if c["delivered"] else (lambda n: None)
    return {**{k: int(c[k]) for k in COUNTS},
            "bounce_rate": (c["refused"] + c["bounced"]) / attempted if attempted else None,
            "complaint_rate": per_delivered(c["complaints"]), "unsubscribe_rate": per_delivered(c["unsubscribes"])}


def deliverability(session: Session, data, labels: list[str]) -> dict:
    """`data` is the report's loaded data (reports.Data); `labels` the variants' names by arm."""
    cells: dict[tuple[int, int], dict] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    for g in data.sent:
        cells[(g.segment_id, g.arm)]["delivered"] += g.sends
    period_ids = [p.id for p in data.periods]
    for r in report_repo.refusals_by_arm(session, period_ids):
        cells[(r.segment_id, r.arm)]["refused"] += r.refused
    kind = {"bounce": "bounced", "complaint": "complaints", "unsubscribe": "unsubscribes"}
    for r in report_repo.negative_events_by_arm(session, data.campaign.id):
        cells[(r.segment_id, r.arm)][kind[r.type]] += r.events
    overall, by_segment, by_arm = (dict.fromkeys(COUNTS, 0), defaultdict(lambda: dict.fromkeys(COUNTS, 0)),
                                   defaultdict(lambda: dict.fromkeys(COUNTS, 0)))
    for (segment_id, arm), c in cells.items():
        for k in COUNTS:
            overall[k] += c[k]
            by_segment[segment_id][k] += c[k]
            by_arm[arm][k] += c[k]
    names = {s.id: s.name for s in data.segments}
    variants = [{"arm": arm, "label": HOLDOUT_LABEL if arm < 0 else labels[arm], **_rates(c)}
                for arm, c in by_arm.items() if c["refused"] + c["bounced"] + c["complaints"] > 0]
    variants.sort(key=lambda v: (-(v["complaint_rate"] or 0), -(v["bounce_rate"] or 0), v["arm"]))
    return {
        "overall": _rates(overall),
        "segments": [{"segment": names.get(sid, str(sid)), **_rates(c)} for sid, c in sorted(by_segment.items())
                     if sid in names],
        "variants": variants[:TOP_VARIANTS],
        "variants_with_bounces_or_complaints": len(variants),
        "complaint_rate_limit": COMPLAINT_LIMIT,
        "complaint_rate_target": COMPLAINT_TARGET,
    }


def caveat(section: dict) -> str | None:
    rate = section["overall"]["complaint_rate"]
    if rate is None or rate < COMPLAINT_TARGET:
        return None
    over = "above Gmail's and Yahoo's limit of 0.3%" if rate >= COMPLAINT_LIMIT else "above the 0.1% they recommend"
    return (f"{100 * rate:.2f}% of the delivered emails drew a spam complaint, {over}: mailbox providers "
            "start filtering or refusing the sender. See which variants draw them under Deliverability.")
