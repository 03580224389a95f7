"""The lift report: control (holdout, the old single email) against the bandit's variants, the
variant leaderboard, factor effects, allocation over time, the learning curve, off-policy
estimates of other policies, and health checks.

Everything is computed from two aggregate queries (campaigns/repositories/reports.py): the ledger
grouped by (period, segment, arm, propensity, status) -- a few rows per arm, however many
customers -- and the events grouped by type and status (plus one grouped join for late data).
Python only combines those rows. The methods, as written in `METHODS` (and shown in every format):

* observed rates: clicks and conversions count sends with at least one (0/1 per send, as the
  engine counts them); revenue per send is the mean revenue over delivered sends;
* absolute lift (bandit - control): Wald 95% interval on the difference of two independent means;
* relative lift (bandit / control - 1): delta method, se^2 = var_b / c^2 + b^2 var_c / c^4;
* P(lift > 0): normal approximation, Phi(lift / se);
* incremental conversions / clicks / revenue: absolute lift x bandit sends (interval likewise);
* leaderboard and factor effects: the campaign's own posterior model (bandit.leaderboard),
  honest draws, P(best) by Monte Carlo;
* off-policy values: bandit.offpolicy (IPS, SNIPS, DR), normal intervals from per-send terms.
"""

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy import stats as sps
from sqlmodel import Session

import bandit
from bandit import leaderboard as bandit_leaderboard
from bandit import offpolicy
from campaigns import design as campaign_design
from campaigns.models import utcnow
from campaigns.repositories import campaigns as repo
from campaigns.repositories import events as event_repo
from campaigns.repositories import reports as report_repo
from campaigns.services import campaigns as campaign_service
from campaigns.services import periods as period_service
from campaigns.services import versions as version_service

Z95 = offpolicy.Z95
METRICS = ("click_rate", "conversion_rate", "revenue_per_send")
SUM_OF = {"click_rate": "clicks", "conversion_rate": "conversions", "revenue_per_send": "revenue"}
INCREMENTAL = {"click_rate": "incremental_clicks", "conversion_rate": "incremental_conversions",
               "revenue_per_send": "incremental_revenue"}
ENGINE_OBJECTIVE = {"click_rate": bandit.Objective.CLICK, "conversion_rate": bandit.Objective.CONVERSION,
                    "revenue_per_send": bandit.Objective.REVENUE}
OBJECTIVE_METRIC = {"click": "click_rate", "conversion": "conversion_rate", "revenue": "revenue_per_send"}
SENT = "sent"
HOLDOUT = bandit.HOLDOUT
SRM_ALPHA = 0.001
DRIFT_MIN_SENDS = 30
POSTERIOR_DRAWS = 4_000
TOP_ARMS_OVER_TIME = 5
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

METHODS = {
    "rates": "click_rate and conversion_rate count delivered sends with at least one click / conversion "
             "(0/1 per send); revenue_per_send is revenue over delivered sends.",
    "absolute_lift": "bandit minus control (holdout) per-send mean; Wald 95% interval on the difference of "
                     "two independent means (binomial variance for rates, sample variance for revenue).",
    "relative_lift": "bandit / control - 1; 95% interval by the delta method "
                     "(se^2 = var_b / c^2 + b^2 var_c / c^4).",
    "prob_lift_positive": "normal approximation: Phi(absolute lift / its standard error).",
    "incremental": "absolute lift x bandit sends (the extra clicks, conversions or revenue the bandit's emails "
                   "brought against the old email for the same sends), interval likewise.",
    "leaderboard": "the campaign's posterior model (same as allocation: structured / hierarchical / "
                   "independent), honest draws (no sharpening); 95% credible interval, P(best) and expected "
                   f"loss among the segment's variants from {POSTERIOR_DRAWS:,} joint Monte Carlo draws "
                   "(P(best) error <= 0.008).",
    "factor_effects": "observed: pooled over the level's variants (weighted by sends, Wald interval; mixes in the "
                      "other factors as allocated); posterior: the model's mean over the level's variants with "
                      "equal weight (the level's effect averaged over the other factors) and P(level is best).",
    "learning_curve": "cumulative successes of the bandit's sends per period, against uniform allocation over the "
                      "same sends estimated by IPS from the logged propensities (reward x (1/K)/w, w = propensity "
                      "/ (1 - holdout share), the arm's probability among bandit sends), and against the control's "
                      "rate x the same sends.",
    "off_policy": "per-send value of alternative policies on the bandit's sends: IPS, self-normalised IPS and "
                  "doubly robust (direct model = per (segment, variant) mean); 95% intervals are normal "
                  "approximations from the per-send contributions. 'leader' picks each segment's current P(best) "
                  "leader from the same data, so its estimates are optimistic (winner's curse). support_gap is "
                  "the target's probability mass on variants the bandit gave weight 0 (IPS cannot see it).",
    "srm": f"sample-ratio mismatch: chi-square test (1 df) of the holdout count against the holdout share, per "
           f"period and segment, over assigned sends and over delivered sends; flagged when p < {SRM_ALPHA}.",
    "late_data": "an applied feedback event is late if it occurred after the next period's allocation snapshot "
                 "of its segment was taken (that allocation could not use it), or was received more than the "
                 "campaign's attribution window after its send.",
    "drift": "per segment and arm (control included), the campaign's objective metric in the latest period "
             "against all earlier periods: alert when the difference lies outside its 95% interval (two-sample "
             f"Wald), arms with >= {DRIFT_MIN_SENDS} sends in both. About 5% of the tested arms alert by chance: "
             "see expected_by_chance and bonferroni. The latest period's feedback may still be arriving "
             "(feedback_window_open), which biases its rates down.",
}


# ---------------------------------------------------------------------------
# counts and their means
# ---------------------------------------------------------------------------


@dataclass
class Cell:
    """Sufficient statistics of a group of delivered sends."""

    sends: float = 0
    clicks: float = 0
    conversions: float = 0
    revenue: float = 0.0
    revenue_sq: float = 0.0

    def add(self, row) -> "Cell":
        self.sends += row.sends
        self.clicks += row.clicks
        self.conversions += row.conversions
        self.revenue += row.revenue
        self.revenue_sq += row.revenue_sq
        return self

    def total(self, metric: str) -> float:
        return getattr(self, SUM_OF[metric])

    def total_sq(self, metric: str) -> float:
        return self.revenue_sq if metric == "revenue_per_send" else self.total(metric)

    def mean_var(self, metric: str) -> tuple[float, float]:
        """Per-send mean and the variance of that mean."""
        n = self.sends
        if n == 0:
            return math.nan, math.nan
        mean = self.total(metric) / n
        if metric == "revenue_per_send":
            var = max(self.revenue_sq / n - mean * mean, 0.0) * n / max(n - 1, 1)
        else:
            var = mean * (1 - mean)
        return mean, var / n

    def public(self) -> dict:
        return {"sends": int(self.sends), "clicks": int(self.clicks), "conversions": int(self.conversions),
                "revenue": float(self.revenue)}


def _f(x) -> float | None:
    """JSON-safe float: NaN and infinities become null."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def wald(cell: Cell, metric: str) -> dict:
    mean, var = cell.mean_var(metric)
    half = Z95 * math.sqrt(var) if not math.isnan(var) else math.nan
    return {"estimate": _f(mean), "ci95": [_f(mean - half), _f(mean + half)]}


def lift_of(control: Cell, treated: Cell, metric: str) -> dict:
    """Lift of `treated` over `control` for one metric (see METHODS)."""
    c, var_c = control.mean_var(metric)
    b, var_b = treated.mean_var(metric)
    diff = b - c
    se = math.sqrt(var_b + var_c) if not math.isnan(var_b + var_c) else math.nan
    rel = rel_se = math.nan
    if c and not math.isnan(c) and not math.isnan(b):
        rel = b / c - 1
        rel_se = math.sqrt(var_b / c**2 + b**2 * var_c / c**4)
    if se > 0:
        prob = _phi(diff / se)
    elif se == 0 and not math.isnan(diff):
        prob = 1.0 if diff > 0 else 0.0
    else:
        prob = math.nan
    n_b = treated.sends
    return {
        "control": _f(c),
        "control_ci95": wald(control, metric)["ci95"],
        "bandit": _f(b),
        "bandit_ci95": wald(treated, metric)["ci95"],
        "absolute_lift": _f(diff),
        "absolute_lift_ci95": [_f(diff - Z95 * se), _f(diff + Z95 * se)],
        "absolute_lift_se": _f(se),
        "relative_lift": _f(rel),
        "relative_lift_ci95": [_f(rel - Z95 * rel_se), _f(rel + Z95 * rel_se)],
        "prob_lift_positive": _f(prob),
        INCREMENTAL[metric]: _f(diff * n_b),
        f"{INCREMENTAL[metric]}_ci95": [_f((diff - Z95 * se) * n_b), _f((diff + Z95 * se) * n_b)],
    }


def lift(control: Cell, treated: Cell) -> dict:
    return {m: lift_of(control, treated, m) for m in METRICS}


# ---------------------------------------------------------------------------
# loading: every aggregate the report needs, in a few queries
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class Group:
    """One row of the ledger aggregate (plain attributes: read many times, SQL rows are slow to)."""

    period_id: int
    segment_id: int
    arm: int
    propensity: float
    status: str
    sends: int
    clicks: int
    conversions: int
    revenue: float
    revenue_sq: float


@dataclass
class Data:
    campaign: object
    segments: list  # Segment rows, the context index is the position
    variants: list  # Variant rows by arm
    periods: list  # period rows (id, number, status, created_at, ...)
    snapshots: dict  # (period number, segment id) -> AllocationSnapshot
    eligible: list[list[int]]  # per segment index
    groups: list  # ledger_groups rows
    number_of: dict = field(default_factory=dict)  # period id -> number

    @cached_property
    def seg_index(self) -> dict[int, int]:
        return {s.id: i for i, s in enumerate(self.segments)}

    def holdout_share(self, number: int, segment_id: int) -> float:
        snap = self.snapshots.get((number, segment_id))
        return snap.holdout_share if snap is not None else self.campaign.holdout_share

    @cached_property
    def sent(self) -> list:
        idx = self.seg_index
        return [g for g in self.groups if g.status == SENT and g.segment_id in idx]


def load(session: Session, campaign_id: int) -> Data:
    campaign = campaign_service.get(session, campaign_id)
    segments = repo.campaign_segments(session, campaign_id)
    variants = repo.variants(session, campaign_id)
    periods = report_repo.campaign_periods(session, campaign_id)
    snapshots = {(snap.version, snap.segment_id): snap for snap, _ in repo.snapshots(session, campaign_id)}
    params = [v.params for v in variants]
    eligible = [campaign_design.eligible_arms(params, campaign.exclusions, s.name) for s in segments]
    groups = [Group(*row) for row in report_repo.ledger_groups(session, [p.id for p in periods])]
    return Data(campaign, segments, variants, periods, snapshots, eligible, groups,
                {p.id: p.number for p in periods})


# ---------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------


def _cells(data: Data):
    """Delivered sends summed by side, (segment, side), (segment, arm) and (period, segment, arm)."""
    side = defaultdict(Cell)
    seg_side = defaultdict(Cell)
    seg_arm = defaultdict(Cell)
    per_period = defaultdict(Cell)
    for g in data.sent:
        s = "control" if g.arm == HOLDOUT else "bandit"
        side[s].add(g)
        seg_side[(g.segment_id, s)].add(g)
        seg_arm[(g.segment_id, g.arm)].add(g)
        per_period[(data.number_of[g.period_id], g.segment_id, g.arm)].add(g)
    return side, seg_side, seg_arm, per_period


def _arm_stats(data: Data, seg_arm) -> list[np.ndarray]:
    """Per segment a (4, K) array of sends, clicks, conversions, revenue per arm."""
    k = len(data.variants)
    out = []
    for seg in data.segments:
        t = np.zeros((4, k))
        for arm in range(k):
            c = seg_arm.get((seg.id, arm))
            if c is not None:
                t[:, arm] = (c.sends, c.clicks, c.conversions, c.revenue)
        out.append(t)
    return out


def _posteriors(data: Data, totals: list[np.ndarray]) -> dict[str, list | None]:
    """Per metric, the engine's posterior summary of every segment (None when it cannot say)."""
    k = len(data.variants)
    if k == 0 or not data.segments:
        return {m: None for m in METRICS}
    factor_design = period_service.factor_design(data.campaign, [v.params for v in data.variants])
    masks = []
    for arms in data.eligible:
        m = np.zeros(k, dtype=bool)
        m[arms] = True
        masks.append(m)
    stats = [bandit.ArmStats(sends=t[0], clicks=t[1], conversions=t[2], revenue=t[3]) for t in totals]
    out: dict[str, list | None] = {}
    for metric in METRICS:
        if metric == "revenue_per_send" and sum(float(t[3].sum()) for t in totals) <= 0:
            out[metric] = None  # no revenue recorded: the engine would rank by conversions instead
            continue
        config = bandit.AllocationConfig(objective=ENGINE_OBJECTIVE[metric], model=bandit.Model(data.campaign.model),
                                         n_draws=POSTERIOR_DRAWS, burn_in_min_sends=0, sharpen=1.0, optimistic=False)
        out[metric] = bandit_leaderboard.summarize_segments(stats, config, seed=int(data.campaign.id),
                                                             design=factor_design, eligible=masks)
    return out


def _leaderboard(data: Data, i: int, seg_arm, posteriors, weights: dict[int, float]) -> dict:
    seg = data.segments[i]
    out = {}
    for metric in METRICS:
        summary = posteriors[metric][i] if posteriors[metric] is not None else None
        rows = []
        for arm in data.eligible[i]:
            cell = seg_arm.get((seg.id, arm), Cell())
            observed = wald(cell, metric)
            row = {
                "arm": arm,
                "variant": data.variants[arm].key,
                "params": data.variants[arm].params,
                "sends": int(cell.sends),
                "observed": observed["estimate"],
                "observed_ci95": observed["ci95"],
                "posterior_mean": None,
                "posterior_ci95": [None, None],
                "p_best": None,
                "expected_loss": None,
                "current_weight": _f(weights.get(arm)),
            }
            if summary is not None:
                row.update(posterior_mean=_f(summary.mean[arm]),
                           posterior_ci95=[_f(summary.ci_low[arm]), _f(summary.ci_high[arm])],
                           p_best=_f(summary.p_best[arm]), expected_loss=_f(summary.expected_loss[arm]))
            rows.append(row)
        rows.sort(key=lambda r: (-(r["posterior_mean"] if r["posterior_mean"] is not None else -1),
                                 -(r["observed"] or 0), r["arm"]))
        out[metric] = rows
    return out


def _factor_effects(data: Data, i: int, seg_arm, posteriors) -> dict:
    seg = data.segments[i]
    factors = list(data.campaign.factors)
    out = {}
    for metric in METRICS:
        summary = posteriors[metric][i] if posteriors[metric] is not None else None
        by_level = {(fl.factor, fl.level): fl for fl in summary.factor_levels} if summary is not None else {}
        rows = []
        for f, name in enumerate(factors):
            for lv, level in enumerate(data.campaign.factors[name]):
                arms = [a for a in data.eligible[i] if data.variants[a].params.get(name) == level]
                if not arms:
                    continue
                cell = Cell()
                for a in arms:
                    c = seg_arm.get((seg.id, a))
                    if c is not None:
                        cell.add(c)
                observed = wald(cell, metric)
                post = by_level.get((f, lv))
                rows.append({
                    "factor": name,
                    "level": level,
                    "variants": len(arms),
                    "sends": int(cell.sends),
                    "observed": observed["estimate"],
                    "observed_ci95": observed["ci95"],
                    "posterior_mean": _f(post.mean) if post else None,
                    "posterior_ci95": [_f(post.ci_low), _f(post.ci_high)] if post else [None, None],
                    "p_best_level": _f(post.p_best) if post else None,
                })
        out[metric] = rows
    return out


def _allocation_over_time(data: Data, segment_id: int) -> dict:
    snaps = sorted((s for (n, sid), s in data.snapshots.items() if sid == segment_id), key=lambda s: s.version)
    peak: dict[int, float] = defaultdict(float)
    for s in snaps:
        for a, w in zip(s.arms, s.weights, strict=True):
            peak[a] = max(peak[a], w)
    top = sorted(peak, key=lambda a: (-peak[a], a))[:TOP_ARMS_OVER_TIME]
    rows = []
    for s in snaps:
        w = dict(zip(s.arms, s.weights, strict=True))
        shares = [float(w.get(a, 0.0)) for a in top]
        rows.append({"period": s.version, "stage": s.stage, "weights": shares,
                     "other": max(0.0, 1.0 - sum(shares)), "arms": len(s.arms)})
    return {"arms": [{"arm": a, "variant": data.variants[a].key} for a in top], "periods": rows}


class Logged:
    """The bandit's delivered sends as logged data, built once: context = segment index, action =
    arm, propensity = the arm's probability among bandit sends (logged probability / (1 - holdout
    share)); per metric the reward sums. `data(metric, mask)` picks groups (e.g. some periods)."""

    def __init__(self, data: Data):
        idx = data.seg_index
        rows = [g for g in data.sent if g.arm != HOLDOUT]
        self.period = np.array([data.number_of[g.period_id] for g in rows], dtype=np.int64)
        self.context = np.array([idx[g.segment_id] for g in rows], dtype=np.int64)
        self.action = np.array([g.arm for g in rows], dtype=np.int64)
        holdout = np.array([data.holdout_share(data.number_of[g.period_id], g.segment_id) for g in rows])
        raw = np.array([g.propensity for g in rows], dtype=np.float64)
        self.propensity = np.minimum(raw / np.maximum(1.0 - holdout, 1e-12), 1.0)
        self.count = np.array([g.sends for g in rows], dtype=np.float64)
        self.sums = {m: np.array([getattr(g, SUM_OF[m]) for g in rows], dtype=np.float64) for m in METRICS}
        self.revenue_sq = np.array([g.revenue_sq for g in rows], dtype=np.float64)

    def data(self, metric: str, mask: np.ndarray | None = None) -> offpolicy.LoggedData:
        r = self.sums[metric]
        sq = self.revenue_sq if metric == "revenue_per_send" else r  # 0/1 rewards: r^2 = r
        # float sums of squares can fall a hair below (sum r)^2 / n; the estimators need the bound
        sq = np.maximum(sq, r * r / np.maximum(self.count, 1.0))
        m = slice(None) if mask is None else mask
        return offpolicy.LoggedData(self.context[m], self.action[m], self.propensity[m], self.count[m], r[m], sq[m])


def _uniform_target(data: Data) -> np.ndarray:
    k = len(data.variants)
    mask = np.zeros((len(data.segments), k), dtype=bool)
    for i, arms in enumerate(data.eligible):
        mask[i, arms] = True
    return offpolicy.uniform_policy(mask)


def _learning_curve(data: Data, logged: Logged, side_by_period) -> dict:
    """Per period: the bandit's successes, and uniform allocation's (IPS) and the control's on the
    same sends, each also cumulative, with 95% intervals."""
    target = _uniform_target(data)
    out = {}
    for metric in METRICS:
        rows = []
        for p in data.periods:
            if not (logged.period == p.number).any():
                continue
            row = {"period": p.number}
            for label, mask, numbers in (("", logged.period == p.number, [p.number]),
                                         ("cumulative_", logged.period <= p.number, range(1, p.number + 1))):
                part = logged.data(metric, mask)
                n = part.n
                est = offpolicy.ips(part, target)
                ctrl = Cell()
                for number in numbers:
                    ctrl.add(side_by_period.get((number, "control"), Cell()))
                c_mean, c_var = ctrl.mean_var(metric)
                c_half = Z95 * math.sqrt(c_var) if not math.isnan(c_var) else math.nan
                row.update({
                    f"{label}bandit_sends": int(n),
                    f"{label}bandit": float(part.reward_sum.sum()),
                    f"{label}uniform_ips": _f(est.value * n),
                    f"{label}uniform_ips_ci95": [_f(est.ci_low * n), _f(est.ci_high * n)],
                    f"{label}control_rate_x_sends": _f(c_mean * n),
                    f"{label}control_rate_x_sends_ci95": [_f((c_mean - c_half) * n), _f((c_mean + c_half) * n)],
                })
            rows.append(row)
        out[metric] = rows
    return out


def _batches(data: Data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logging distribution of every (period, segment) snapshot over all arms, its segment index
    and its delivered bandit sends (for the support gap of off-policy targets)."""
    k = len(data.variants)
    idx = data.seg_index
    sends = defaultdict(float)
    for g in data.sent:
        if g.arm != HOLDOUT:
            sends[(data.number_of[g.period_id], g.segment_id)] += g.sends
    keys = [key for key in data.snapshots if key[1] in idx]
    logging = np.zeros((len(keys), k))
    for j, key in enumerate(keys):
        snap = data.snapshots[key]
        logging[j, snap.arms] = snap.weights
    contexts = np.array([idx[key[1]] for key in keys], dtype=np.int64)
    return logging, contexts, np.array([sends[key] for key in keys], dtype=np.float64)


def _off_policy(data: Data, logged: Logged, leaders: list[int | None]) -> dict:
    k = len(data.variants)
    n_seg = len(data.segments)
    uniform = _uniform_target(data)
    policies = {"uniform": uniform}
    if all(a is not None for a in leaders) and n_seg:
        policies["leader"] = offpolicy.greedy_policy(np.array(leaders), k)
    logging, contexts, batch_sends = _batches(data)
    by_metric = {m: logged.data(m) for m in METRICS}
    out = {"policies": {}, "leaders": [
        {"segment": s.name, "arm": a, "variant": data.variants[a].key if a is not None else None}
        for s, a in zip(data.segments, leaders, strict=True)]}
    for name, target in policies.items():
        gap = offpolicy.unsupported_mass(target[contexts], logging, batch_sends) if len(contexts) else 0.0
        entry = {"support_gap": _f(gap), "overall": {}, "segments": {}}
        for metric in METRICS:
            everything = by_metric[metric]
            if everything.n == 0:
                continue
            q = offpolicy.direct_model(everything, n_seg, k)
            entry["overall"][metric] = {e: v.as_dict() for e, v in offpolicy.evaluate(everything, target, q).items()}
            for i, seg in enumerate(data.segments):
                part = everything.subset(everything.context == i)
                if part.n == 0:
                    continue
                entry["segments"].setdefault(seg.name, {})[metric] = {
                    e: v.as_dict() for e, v in offpolicy.evaluate(part, target, q).items()}
        out["policies"][name] = entry
    return out


def _srm(data: Data) -> list[dict]:
    assigned = defaultdict(lambda: [0, 0])  # (number, segment) -> [holdout, total]
    delivered = defaultdict(lambda: [0, 0])
    for g in data.groups:
        key = (data.number_of[g.period_id], g.segment_id)
        for counts, use in ((assigned, True), (delivered, g.status == SENT)):
            if use:
                counts[key][1] += g.sends
                if g.arm == HOLDOUT:
                    counts[key][0] += g.sends
    names = {s.id: s.name for s in data.segments}
    out = []
    for (number, seg_id), (h_obs, total) in sorted(assigned.items()):
        share = data.holdout_share(number, seg_id)
        row = {"period": number, "segment": names.get(seg_id, str(seg_id)), "holdout_share": share}
        for label, (h, n) in (("assigned", (h_obs, total)), ("delivered", tuple(delivered[(number, seg_id)]))):
            p = None
            if n > 0 and 0 < share < 1:
                p = float(sps.chisquare([h, n - h], [n * share, n * (1 - share)]).pvalue)
            row[label] = {"holdout": int(h), "total": int(n), "expected_holdout": n * share, "p_value": _f(p)}
        row["flagged"] = any(row[x]["p_value"] is not None and row[x]["p_value"] < SRM_ALPHA
                             for x in ("assigned", "delivered"))
        out.append(row)
    return out


def _drift(data: Data, per_period) -> dict:
    metric = OBJECTIVE_METRIC[data.campaign.objective]
    window = timedelta(days=data.campaign.attribution_window_days)
    completed = {p.number: p.completed_at for p in data.periods}
    alerts, tested = [], 0
    for seg in data.segments:
        numbers = sorted({n for (n, sid, _) in per_period if sid == seg.id})
        if len(numbers) < 2:
            continue
        latest = numbers[-1]
        done = completed.get(latest)
        window_open = done is None or done + window > utcnow()
        for arm in [HOLDOUT, *data.eligible[data.seg_index[seg.id]]]:
            now_cell = per_period.get((latest, seg.id, arm), Cell())
            before = Cell()
            for n in numbers[:-1]:
                before.add(per_period.get((n, seg.id, arm), Cell()))
            if now_cell.sends < DRIFT_MIN_SENDS or before.sends < DRIFT_MIN_SENDS:
                continue
            tested += 1
            m1, v1 = now_cell.mean_var(metric)
            m0, v0 = before.mean_var(metric)
            se = math.sqrt(v0 + v1)
            diff = m1 - m0
            z = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
            if abs(z) <= Z95:
                continue
            alerts.append({
                "segment": seg.name, "arm": arm,
                "variant": "control" if arm == HOLDOUT else data.variants[arm].key,
                "metric": metric, "latest_period": latest, "latest": _f(m1), "latest_sends": int(now_cell.sends),
                "earlier": _f(m0), "earlier_ci95": [_f(m0 - Z95 * math.sqrt(v0)), _f(m0 + Z95 * math.sqrt(v0))],
                "earlier_sends": int(before.sends), "difference_ci95": [_f(diff - Z95 * se), _f(diff + Z95 * se)],
                "p_value": _f(2 * (1 - _phi(abs(z)))), "feedback_window_open": window_open,
            })
    bonferroni = 0.05 / tested if tested else None
    for a in alerts:
        a["bonferroni"] = bool(bonferroni is not None and a["p_value"] is not None and a["p_value"] < bonferroni)
    return {"metric": metric, "tested": tested, "expected_by_chance": 0.05 * tested, "alerts": alerts}


def _events(session: Session, campaign_id: int) -> dict:
    counts = event_repo.event_counts(session, campaign_id)

    def total(*, status=None, type_=None) -> int:
        return sum(n for (t, s), n in counts.items()
                   if (status is None or s == status) and (type_ is None or t == type_))

    return {
        "applied": total(status="applied"),
        "unattributed": total(status="unattributed"),
        "excluded_as_bots": total(status="excluded"),
        "unsubscribes": total(type_="unsubscribe"),
        "complaints": total(type_="complaint"),
        "by_type_status": [{"type": t, "status": s, "events": n} for (t, s), n in sorted(counts.items())],
    }


def _late(session: Session, data: Data) -> dict:
    rows = report_repo.late_events(session, data.campaign.id, [p.id for p in data.periods],
                                   data.campaign.attribution_window_days)
    per = [{"period": data.number_of[r.period_id], "events": int(r.events),
            "after_next_allocation": int(r.after_next_allocation or 0),
            "received_after_window": int(r.received_after_window or 0), "late": int(r.late or 0)} for r in rows]
    per.sort(key=lambda r: r["period"])
    events = sum(r["events"] for r in per)
    late = sum(r["late"] for r in per)
    return {"events": events, "late": late, "share": _f(late / events) if events else None,
            "after_next_allocation": sum(r["after_next_allocation"] for r in per),
            "received_after_window": sum(r["received_after_window"] for r in per),
            "attribution_window_days": data.campaign.attribution_window_days, "periods": per}


# ---------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------


def lift_report(session: Session, campaign_id: int) -> dict:
    data = load(session, campaign_id)
    campaign = data.campaign
    objective_metric = OBJECTIVE_METRIC[campaign.objective]
    side, seg_side, seg_arm, per_period = _cells(data)
    side_by_period = defaultdict(Cell)
    for (number, _, arm), cell in per_period.items():
        side_by_period[(number, "control" if arm == HOLDOUT else "bandit")].add(cell)
    posteriors = _posteriors(data, _arm_stats(data, seg_arm))
    logged = Logged(data)
    latest = {}
    for (_, seg_id), snap in sorted(data.snapshots.items()):  # by period number: the newest wins
        latest[seg_id] = snap

    segments, leaders = [], []
    for i, seg in enumerate(data.segments):
        snap = latest.get(seg.id)
        weights = dict(zip(snap.arms, snap.weights, strict=True)) if snap else {}
        control, treated = seg_side.get((seg.id, "control"), Cell()), seg_side.get((seg.id, "bandit"), Cell())
        board = _leaderboard(data, i, seg_arm, posteriors, weights)
        ranked = [r for r in board[objective_metric] if r["p_best"] is not None]
        leaders.append(max(ranked, key=lambda r: (r["p_best"], r["posterior_mean"] or 0))["arm"] if ranked else None)
        segments.append({
            "segment": seg.name,
            "segment_id": seg.id,
            "control": control.public(),
            "bandit": treated.public(),
            "lift": lift(control, treated),
            "arms": _arms(data, seg, seg_arm, control, weights, objective_metric),
            "allocation": None if snap is None else {
                "period": snap.version, "stage": snap.stage, "reason": snap.reason,
                "top": _top_weights(snap, data.variants)},
            "leaderboard": board,
            "factor_effects": _factor_effects(data, i, seg_arm, posteriors),
            "allocation_over_time": _allocation_over_time(data, seg.id),
        })
    events = _events(session, campaign_id)
    drift = _drift(data, per_period)
    srm = _srm(data)
    model = next((p[0].model for p in posteriors.values() if p), None)
    return {
        "campaign_id": campaign_id,
        "name": campaign.name,
        "status": campaign.status,
        "objective": campaign.objective,
        "objective_metric": objective_metric,
        "holdout_share": campaign.holdout_share,
        "model": model,
        "generated_at": utcnow().isoformat(),
        "periods": len(data.periods),
        "overall": {"control": side["control"].public(), "bandit": side["bandit"].public(),
                    "lift": lift(side["control"], side["bandit"])},
        "segments": segments,
        "learning_curve": _learning_curve(data, logged, side_by_period),
        "off_policy": _off_policy(data, logged, leaders),
        "health": {
            "srm": srm,
            "srm_flagged": sum(r["flagged"] for r in srm),
            "late_data": _late(session, data),
            "events": events,
            "drift": drift,
        },
        "events": {"applied": events["applied"], "unattributed": events["unattributed"]},
        # promote / roll back / resume: who did what, why, and each segment's current mode
        "versions": _versions(session, campaign_id),
        "methods": METHODS,
    }


def _versions(session: Session, campaign_id: int) -> dict:
    v = version_service.versions(session, campaign_id)
    for row in (*v["timeline"], *v["segments"]):  # the report is plain JSON all the way down
        for key in ("created_at", "since"):
            if row.get(key) is not None:
                row[key] = row[key].isoformat()
    return v


def _arms(data: Data, seg, seg_arm, control: Cell, weights: dict, objective_metric: str) -> list[dict]:
    """Per delivered arm: counts, rates and each metric's lift over the segment's control."""
    rows = []
    for (sid, arm), cell in seg_arm.items():
        if sid != seg.id or arm == HOLDOUT:
            continue
        rows.append({
            "arm": arm,
            "variant": data.variants[arm].key,
            "params": data.variants[arm].params,
            **cell.public(),
            **{m: cell.total(m) / cell.sends for m in METRICS},
            "current_weight": _f(weights.get(arm)),
            "lift_vs_control": {m: lift_of(control, cell, m) for m in METRICS},
        })
    rows.sort(key=lambda a: (-a[objective_metric], a["arm"]))
    return rows


def _top_weights(snap, variants, n: int = 5) -> list[dict]:
    ranked = sorted(zip(snap.arms, snap.weights, strict=True), key=lambda aw: -aw[1])[:n]
    return [{"arm": a, "variant": variants[a].key, "weight": w} for a, w in ranked]


# ---------------------------------------------------------------------------
# formats: CSV (tidy) and HTML
# ---------------------------------------------------------------------------

CSV_COLUMNS = [
    "segment", "row", "arm", "variant", "metric", "sends", "total", "estimate", "ci95_low", "ci95_high",
    "posterior_mean", "posterior_ci95_low", "posterior_ci95_high", "p_best", "expected_loss", "current_weight",
    "lift_vs_control", "lift_ci95_low", "lift_ci95_high", "relative_lift", "relative_lift_ci95_low",
    "relative_lift_ci95_high", "prob_lift_positive",
]


def _csv_lift(lf: dict | None) -> list:
    if lf is None:
        return [None] * 7
    return [lf["absolute_lift"], *lf["absolute_lift_ci95"], lf["relative_lift"], *lf["relative_lift_ci95"],
            lf["prob_lift_positive"]]


def csv_rows(report: dict):
    """Tidy rows: one per segment x arm x metric (plus the control and the bandit as a whole, and
    the overall rows under segment "ALL"). Lift columns: against the segment's control."""
    def side_rows(segment: str, block: dict, lifts: dict):
        for metric in METRICS:
            lf = lifts[metric]
            for label, arm, variant, key in (("control", HOLDOUT, "control", "control"),
                                             ("bandit", None, "all variants", "bandit")):
                n = block[key]["sends"]
                total = block[key][SUM_OF[metric]]
                yield [segment, label, arm, variant, metric, n, total, lf[key], *lf[f"{key}_ci95"],
                       None, None, None, None, None, None,
                       *(_csv_lift(lf) if key == "bandit" else [None] * 7)]

    yield from side_rows("ALL", report["overall"], report["overall"]["lift"])
    for seg in report["segments"]:
        yield from side_rows(seg["segment"], seg, seg["lift"])
        arms = {a["arm"]: a for a in seg["arms"]}
        for metric in METRICS:
            for r in seg["leaderboard"][metric]:
                a = arms.get(r["arm"])
                total = a[SUM_OF[metric]] if a else 0
                yield [seg["segment"], "arm", r["arm"], r["variant"], metric, r["sends"], total, r["observed"],
                       *r["observed_ci95"], r["posterior_mean"], *r["posterior_ci95"], r["p_best"],
                       r["expected_loss"], r["current_weight"],
                       *_csv_lift(a["lift_vs_control"][metric] if a else None)]


def render_html(report: dict) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from campaigns.services import report_charts

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda x, d=1: "–" if x is None else f"{100 * x:.{d}f}%"
    env.filters["num"] = lambda x, d=4: "–" if x is None else f"{x:,.{d}f}"
    return env.get_template("report.html").render(r=report, charts=report_charts.charts(report), metrics=METRICS)
