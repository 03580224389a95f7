"""The report's profit section (profit objective): profit per send of the holdout and of the bandit,
and the profit lift, overall and per segment, by the method of the revenue lift.

Per delivered send, profit = revenue x (margin - the variant's cost share) - converted x its fixed
cost - unsubscribed x the unsubscribe cost (campaigns/economics.py). The holdout's email (the old
single email) has no level costs: its profit per send is revenue x margin - unsubscribed x the
unsubscribe cost. A send counts as unsubscribed when an unsubscribe event was applied to it.

Mean and variance come from per-(segment, arm) sums, so the ledger is never read row by row: with
x = a r - b c - u d (r revenue, c and d the 0/1 converted and unsubscribed flags; a, b, u the
arm's net margin, fixed cost and the unsubscribe cost),
    sum x   = a R - b C - u D
    sum x^2 = a^2 R2 + b^2 C + u^2 D - 2ab RC - 2au RD + 2bu CD     (c^2 = c, d^2 = d)
and the lift is the revenue lift's computation on those sums (`measure`, given by the report).
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlmodel import Session

from campaigns import economics as campaign_economics
from campaigns.repositories import reports as report_repo

HOLDOUT = -1
METHOD = ("profit per send = revenue x (margin - the variant's cost share) - conversions x its fixed cost - "
          "unsubscribes x the unsubscribe cost, per delivered send; the holdout's old email has no level costs "
          "(revenue x margin - unsubscribes x the unsubscribe cost). Profit lift: bandit minus control per-send "
          "mean with the revenue lift's intervals (Wald, Fieller, anytime-valid), on the per-send profit's "
          "mean and variance.")

CAVEAT = ("Profit uses the campaign's economics (margin, level costs, unsubscribe cost) as entered, not measured "
          "costs; the old email (the holdout) has no level costs, so its profit is revenue x margin minus "
          "the unsubscribes' cost.")


@dataclass
class Sums:
    """Delivered sends, their profit and its sum of squares."""

    sends: float = 0.0
    profit: float = 0.0
    profit_sq: float = 0.0
    unsubscribes: float = 0.0

    def add(self, other: "Sums") -> "Sums":
        self.sends += other.sends
        self.profit += other.profit
        self.profit_sq += other.profit_sq
        self.unsubscribes += other.unsubscribes
        return self

    def public(self) -> dict:
        return {"sends": int(self.sends), "profit": self.profit, "unsubscribes": int(self.unsubscribes),
                "profit_per_send": self.profit / self.sends if self.sends else None}


def group_sums(row, net_margin: float, fixed: float, unsubscribe_cost: float) -> Sums:
    """The profit sums of one (segment, arm) group of `report_repo.profit_moments`."""
    a, b, u = net_margin, fixed, unsubscribe_cost
    total = a * row.revenue - b * row.conversions - u * row.unsubscribes
    total_sq = (a * a * row.revenue_sq + b * b * row.conversions + u * u * row.unsubscribes
                - 2 * a * b * row.revenue_conv - 2 * a * u * row.revenue_unsub + 2 * b * u * row.conv_unsub)
    return Sums(row.sends, total, max(total_sq, 0.0), row.unsubscribes)


def arm_sums(rows, stored: dict, variants: list[dict]) -> dict[tuple[int, int], Sums]:
    """(segment id, arm) -> Sums, from the per-(segment, arm) moments; the holdout (arm -1) is
    priced without level costs."""
    share, fixed = campaign_economics.arm_costs(stored, variants)
    margin, unsub = float(stored["margin"]), float(stored.get("unsubscribe_cost", 0.0))
    out: dict[tuple[int, int], Sums] = defaultdict(Sums)
    for row in rows:
        if row.arm == HOLDOUT:
            out[(row.segment_id, HOLDOUT)].add(group_sums(row, margin, 0.0, unsub))
        elif 0 <= row.arm < len(variants):
            out[(row.segment_id, row.arm)].add(group_sums(row, margin - share[row.arm], fixed[row.arm], unsub))
    return out


def _block(control: Sums, bandit: Sums, measure: Callable[[Sums, Sums], dict]) -> dict:
    return {"control": control.public(), "bandit": bandit.public(), "lift": measure(control, bandit)}


def _variants(control: Sums, by_arm: dict[int, Sums], labels: list[str], measure) -> list[dict]:
    """A segment's variants by observed profit per send, each with its interval and its lift over
    the segment's holdout (the same method)."""
    out = []
    for arm, sums in by_arm.items():
        lf = measure(control, sums)
        out.append({"arm": arm, "variant": labels[arm], "sends": int(sums.sends), "profit": sums.profit,
                    "profit_per_send": lf["bandit"], "ci95": lf["bandit_ci95"],
                    "lift_vs_control": lf["absolute_lift"], "lift_ci95": lf["absolute_lift_ci95"]})
    out.sort(key=lambda v: (-(v["profit_per_send"] if v["profit_per_send"] is not None else -np.inf), v["arm"]))
    return out


def section(session: Session, data, measure: Callable[[Sums, Sums], dict]) -> dict:
    """The profit section of a profit campaign's report; `measure(control, bandit)` is the lift of
    profit per send computed as the revenue lift is."""
    campaign = data.campaign
    rows = report_repo.profit_moments(session, campaign.id, [p.id for p in data.periods])
    sums = arm_sums(rows, campaign.economics, [v.params for v in data.variants])
    overall = {"control": Sums(), "bandit": Sums()}
    segments = []
    for seg in data.segments:
        by_arm = {arm: x for (sid, arm), x in sums.items() if sid == seg.id and arm != HOLDOUT}
        control, bandit = sums.get((seg.id, HOLDOUT), Sums()), Sums()
        for x in by_arm.values():
            bandit.add(x)
        overall["control"].add(control)
        overall["bandit"].add(bandit)
        segments.append({"segment": seg.name, **_block(control, bandit, measure),
                         "variants": _variants(control, by_arm, data.labels, measure)})
    return {"economics": campaign.economics, "overall": _block(overall["control"], overall["bandit"], measure),
            "segments": segments, "method": METHOD}


def csv_rows(profit: dict | None):
    """Named CSV columns per row (metric profit_per_send): for ALL and each segment, the control and
    the bandit's profit per send, the bandit's row with the lift against the control; then per
    segment and variant (row "arm") its profit per send and its lift against the segment's control."""
    if not profit:
        return
    for segment, block in [("ALL", profit["overall"]), *((s["segment"], s) for s in profit["segments"])]:
        lf = block["lift"]
        for key, label in (("control", "old email"), ("bandit", "bandit")):
            cols = {"segment": segment, "row": key, "metric": "profit_per_send", "sends": block[key]["sends"],
                    "total": block[key]["profit"], "estimate": lf[key], "ci95_low": lf[f"{key}_ci95"][0],
                    "ci95_high": lf[f"{key}_ci95"][1], "label": label,
                    "arm": HOLDOUT if key == "control" else None,
                    "variant": "control" if key == "control" else "all variants"}
            if key == "bandit":
                anytime = lf.get("absolute_lift_anytime_ci95", [None, None])
                cols.update(lift_vs_control=lf["absolute_lift"], lift_ci95_low=lf["absolute_lift_ci95"][0],
                            lift_ci95_high=lf["absolute_lift_ci95"][1], relative_lift=lf["relative_lift"],
                            relative_lift_ci95_low=lf["relative_lift_ci95"][0],
                            relative_lift_ci95_high=lf["relative_lift_ci95"][1],
                            prob_lift_positive=lf["prob_lift_positive"], anytime_ci95_low=anytime[0],
                            anytime_ci95_high=anytime[1], verdict=lf.get("verdict"))
            yield cols
    for seg in profit["segments"]:
        for v in seg["variants"]:
            yield {"segment": seg["segment"], "row": "arm", "arm": v["arm"], "variant": v["variant"],
                   "metric": "profit_per_send", "sends": v["sends"], "total": v["profit"],
                   "estimate": v["profit_per_send"], "ci95_low": v["ci95"][0], "ci95_high": v["ci95"][1],
                   "lift_vs_control": v["lift_vs_control"], "lift_ci95_low": v["lift_ci95"][0],
                   "lift_ci95_high": v["lift_ci95"][1], "label": v["variant"]}
