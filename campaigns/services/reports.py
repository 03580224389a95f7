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
* relative lift (bandit / control - 1): Fieller's interval, consistent with the absolute test;
* anytime-valid interval of the absolute lift: normal-mixture confidence sequence (bandit.inference);
* adjusted lift: CUPED on pre-campaign spend and order count;
* P(lift > 0): normal approximation, Phi(lift / se);
* incremental conversions / clicks / revenue: absolute lift x bandit sends (interval likewise);
* leaderboard and factor effects: the campaign's own posterior model (bandit.leaderboard),
  honest draws, P(best) by Monte Carlo;
* off-policy values: bandit.offpolicy (IPS, SNIPS, DR), normal intervals from per-send terms.
"""

import hashlib
import json
import math
import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy import stats as sps
from sqlmodel import Session

import bandit
from bandit import inference, offpolicy
from bandit import leaderboard as bandit_leaderboard
from campaigns import design as campaign_design
from campaigns import economics as campaign_economics
from campaigns.db import snapshot_scope
from campaigns.models import utcnow
from campaigns.repositories import campaigns as repo
from campaigns.repositories import events as event_repo
from campaigns.repositories import reports as report_repo
from campaigns.services import campaigns as campaign_service
from campaigns.services import period_health, report_contention, report_deliverability, report_profit
from campaigns.services import periods as period_service
from campaigns.services import versions as version_service
from campaigns.settings import get_settings

Z95 = offpolicy.Z95
METRICS = ("click_rate", "conversion_rate", "revenue_per_send")
SUM_OF = {"click_rate": "clicks", "conversion_rate": "conversions", "revenue_per_send": "revenue"}
INCREMENTAL = {"click_rate": "incremental_clicks", "conversion_rate": "incremental_conversions",
               "revenue_per_send": "incremental_revenue"}
ENGINE_OBJECTIVE = {"click_rate": bandit.Objective.CLICK, "conversion_rate": bandit.Objective.CONVERSION,
                    "revenue_per_send": bandit.Objective.REVENUE}
# a profit campaign's leaderboard and drift read revenue per send; its profit is the "profit" section
OBJECTIVE_METRIC = {"click": "click_rate", "conversion": "conversion_rate", "revenue": "revenue_per_send",
                    "profit": "revenue_per_send"}
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
                     "two independent means (binomial variance for rates, sample variance for revenue); a rate with no "
                     "success (or no failure) takes the variance of (x + 1/2) / (n + 1) instead of 0.",
    "relative_lift": "bandit / control - 1; 95% interval by Fieller's method: the ratios r with (b - r c)^2 <= "
                     "z^2 (var_b + r^2 var_c), so it excludes 0 exactly when the absolute interval does; null bounds "
                     "when the control's rate is not told apart from 0 (the ratio is unbounded).",
    "anytime_valid": "absolute_lift_anytime_ci95: normal-mixture confidence sequence (Howard et al. 2021, as in "
                     "GrowthBook), half-width sqrt(se^2 (n rho^2 + 1) / (n rho^2) (log(n rho^2 + 1) - 2 log 0.05)), "
                     "n = delivered sends of both sides, rho tuned at MAB_REPORT_SEQUENTIAL_TUNING_SENDS; valid at "
                     "every look. verdict: better / worse when it excludes 0, else undecided.",
    "adjusted_lift": "CUPED / regression adjustment on each customer's spend and order count before the campaign "
                     "started (pooled within-group coefficients); variance_reduction = 1 - adjusted / unadjusted "
                     "variance; falls back to the unadjusted lift, with the reason, without usable history.",
    "ipw": "leaderboard and factor-effect ipw: self-normalised inverse-propensity mean of the segment's bandit sends "
           "of the variant (or level), sum(r / p) / sum(1 / p), p the logged probability among bandit sends: each "
           "period counts by its traffic whatever the allocation gave the variant; Hajek 95% interval.",
    "projection": "absolute lift x average delivered sends per period (holdout included) x "
                  "MAB_REPORT_PROJECTION_PERIODS, interval likewise; assumptions listed with it.",
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
    "deliverability": "bounce rate = (sends the mail server refused for good + hard bounces reported after "
                      "delivery by a bounce message or an ESP) / (delivered + refused); complaint rate = spam "
                      "complaints / delivered (Gmail and Yahoo: below 0.3%, 0.1% recommended); unsubscribe rate "
                      "= unsubscribes / delivered; per campaign, segment and variant (the holdout included).",
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
            # No success (or no failure) would give a variance of 0 and an interval of no width, as if
            # the rate were known exactly. Its variance is then that of the Jeffreys prior's centre,
            # (x + 1/2) / (n + 1): the intervals stay open on the side the data cannot rule out.
            x = self.total(metric)
            p = mean if 0 < x < n else (x + 0.5) / (n + 1)
            var = p * (1 - p)
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


def lift_of(control: Cell, treated: Cell, metric: str, tuning_sends: float | None = None) -> dict:
    """Lift of `treated` over `control` for one metric (see METHODS). With `tuning_sends`, also the
    anytime-valid interval of the absolute lift (a confidence sequence tuned at that many sends)."""
    c, var_c = control.mean_var(metric)
    b, var_b = treated.mean_var(metric)
    diff = b - c
    se = math.sqrt(var_b + var_c) if not math.isnan(var_b + var_c) else math.nan
    rel = math.nan
    if c and not math.isnan(c) and not math.isnan(b):
        rel = b / c - 1
    rel_ci = inference.fieller(b, var_b, c, var_c, Z95)
    if se > 0:
        prob = _phi(diff / se)
    elif se == 0 and not math.isnan(diff):
        prob = 1.0 if diff > 0 else 0.0
    else:
        prob = math.nan
    n_b = treated.sends
    out = {
        "control": _f(c),
        "control_ci95": wald(control, metric)["ci95"],
        "bandit": _f(b),
        "bandit_ci95": wald(treated, metric)["ci95"],
        "absolute_lift": _f(diff),
        "absolute_lift_ci95": [_f(diff - Z95 * se), _f(diff + Z95 * se)],
        "absolute_lift_se": _f(se),
        "relative_lift": _f(rel),
        # Fieller: [null, null] when the control's own rate is too uncertain to bound a ratio
        "relative_lift_ci95": [_f(rel_ci[0]), _f(rel_ci[1])] if rel_ci else [None, None],
        "prob_lift_positive": _f(prob),
        INCREMENTAL[metric]: _f(diff * n_b),
        f"{INCREMENTAL[metric]}_ci95": [_f((diff - Z95 * se) * n_b), _f((diff + Z95 * se) * n_b)],
    }
    if tuning_sends is not None:
        cs = inference.confidence_sequence(diff, se, control.sends + n_b, tuning_sends) if se > 0 else None
        out["absolute_lift_anytime_ci95"] = [_f(cs[0]), _f(cs[1])] if cs else [None, None]
        out["verdict"] = _verdict(cs)
    return out


VERDICTS = {
    "better": "the bandit beats the baseline",
    "worse": "the baseline beats the bandit",
    "undecided": "no difference shown yet",
}


def _verdict(cs) -> str:
    """From the anytime-valid interval: it stays right however often the report is read."""
    if cs is None or cs[0] is None or math.isnan(cs[0]):
        return "undecided"
    return "better" if cs[0] > 0 else ("worse" if cs[1] < 0 else "undecided")


def lift(control: Cell, treated: Cell, tuning_sends: float | None = None) -> dict:
    return {m: lift_of(control, treated, m, tuning_sends) for m in METRICS}


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
    snapshots: dict  # (period number, segment id) -> AllocationSnapshot, the period's last wave
    eligible: list[list[int]]  # per segment index
    groups: list  # ledger_groups rows
    number_of: dict = field(default_factory=dict)  # period id -> number
    waves: dict = field(default_factory=dict)  # (period number, segment id) -> its snapshots, wave by wave

    @cached_property
    def seg_index(self) -> dict[int, int]:
        return {s.id: i for i, s in enumerate(self.segments)}

    def holdout_share(self, number: int, segment_id: int) -> float:
        snap = self.snapshots.get((number, segment_id))
        return snap.holdout_share if snap is not None else self.campaign.holdout_share

    @cached_property
    def labels(self) -> list[str]:
        """Variant names from their factor levels, in the campaign's factor order."""
        return [variant_label(v.params, self.campaign.factors) for v in self.variants]

    @cached_property
    def sent(self) -> list:
        idx = self.seg_index
        return [g for g in self.groups if g.status == SENT and g.segment_id in idx]


def load(session: Session, campaign_id: int) -> Data:
    campaign = campaign_service.get(session, campaign_id)
    segments = repo.campaign_segments(session, campaign_id)
    variants = repo.variants(session, campaign_id)
    periods = report_repo.campaign_periods(session, campaign_id)
    waves = defaultdict(list)  # ordered by (period, segment, wave)
    for snap, _ in repo.snapshots(session, campaign_id):
        waves[(snap.version, snap.segment_id)].append(snap)
    snapshots = {key: snaps[-1] for key, snaps in waves.items()}
    params = [v.params for v in variants]
    eligible = [campaign_design.eligible_arms(params, campaign.exclusions, s.name) for s in segments]
    groups = [Group(*row) for row in report_repo.ledger_groups(session, [p.id for p in periods])]
    return Data(campaign, segments, variants, periods, snapshots, eligible, groups,
                {p.id: p.number for p in periods}, dict(waves))


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
    key = _posterior_key(data, totals, masks)
    with _CACHE_LOCK:
        if key in _POSTERIOR_CACHE:
            _POSTERIOR_CACHE.move_to_end(key)
            return _POSTERIOR_CACHE[key]
    stats = [bandit.ArmStats(sends=t[0], clicks=t[1], conversions=t[2], revenue=t[3]) for t in totals]
    out: dict[str, list | None] = {}
    for metric in METRICS:
        if metric == "revenue_per_send" and sum(float(t[3].sum()) for t in totals) <= 0:
            out[metric] = None  # no revenue recorded: the engine would rank by conversions instead
            continue
        model = campaign_economics.engine_model(data.campaign.objective, data.campaign.model)  # as allocated
        config = bandit.AllocationConfig(objective=ENGINE_OBJECTIVE[metric], model=model,
                                         n_draws=POSTERIOR_DRAWS, burn_in_min_sends=0, sharpen=1.0, optimistic=False)
        out[metric] = bandit_leaderboard.summarize_segments(stats, config, seed=int(data.campaign.id),
                                                             design=factor_design, eligible=masks)
    with _CACHE_LOCK:
        _POSTERIOR_CACHE[key] = out
        while len(_POSTERIOR_CACHE) > POSTERIOR_CACHE_SIZE:
            _POSTERIOR_CACHE.popitem(last=False)
    return out


# The posteriors are most of the report's time (Monte Carlo over every arm of every segment) and
# depend only on the per-arm totals: between two folds of feedback the report is read again and
# again on the same totals, so their summaries are kept per process, keyed by everything they
# depend on (seeded draws: the same inputs give the same summary).
POSTERIOR_CACHE_SIZE = 16
_POSTERIOR_CACHE: OrderedDict = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _posterior_key(data: Data, totals: list[np.ndarray], masks: list[np.ndarray]) -> tuple:
    h = hashlib.sha256()
    for a in (*totals, *masks):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(json.dumps([data.campaign.factors, data.campaign.exclusions], sort_keys=True, default=str).encode())
    return data.campaign.id, data.campaign.model, POSTERIOR_DRAWS, h.hexdigest()


def _leaderboard(data: Data, i: int, seg_arm, posteriors, weights: dict[int, float], logged) -> dict:
    seg = data.segments[i]
    out = {}
    for metric in METRICS:
        summary = posteriors[metric][i] if posteriors[metric] is not None else None
        ipw = _ipw_means(logged, i, metric, np.arange(len(data.variants)))
        rows = []
        for arm in data.eligible[i]:
            cell = seg_arm.get((seg.id, arm), Cell())
            observed = wald(cell, metric)
            row = {
                "arm": arm,
                "variant": data.variants[arm].key,
                "label": data.labels[arm],
                "params": data.variants[arm].params,
                "sends": int(cell.sends),
                "observed": observed["estimate"],
                "observed_ci95": observed["ci95"],
                "posterior_mean": None,
                "posterior_ci95": [None, None],
                "p_best": None,
                "expected_loss": None,
                "current_weight": _f(weights.get(arm)),
                **ipw.get(arm, IPW_NONE),
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


def _factor_effects(data: Data, i: int, seg_arm, posteriors, logged) -> dict:
    seg = data.segments[i]
    factors = list(data.campaign.factors)
    out = {}
    for metric in METRICS:
        summary = posteriors[metric][i] if posteriors[metric] is not None else None
        by_level = {(fl.factor, fl.level): fl for fl in summary.factor_levels} if summary is not None else {}
        rows = []
        for f, name in enumerate(factors):
            levels = data.campaign.factors[name]
            level_of = np.array([levels.index(v.params[name]) if v.params.get(name) in levels else -1
                                 for v in data.variants])
            ipw = _ipw_means(logged, i, metric, level_of)
            for lv, level in enumerate(levels):
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
                    **ipw.get(lv, IPW_NONE),
                })
        out[metric] = rows
    return out


def _allocation_over_time(data: Data, segment_id: int) -> dict:
    snaps = sorted((s for (n, sid), wave in data.waves.items() if sid == segment_id for s in wave),
                   key=lambda s: (s.version, s.wave))
    peak: dict[int, float] = defaultdict(float)
    for s in snaps:
        for a, w in zip(s.arms, s.weights, strict=True):
            peak[a] = max(peak[a], w)
    top = sorted(peak, key=lambda a: (-peak[a], a))[:TOP_ARMS_OVER_TIME]
    rows = []
    for s in snaps:
        w = dict(zip(s.arms, s.weights, strict=True))
        shares = [float(w.get(a, 0.0)) for a in top]
        rows.append({"period": s.version, "wave": s.wave, "stage": s.stage, "weights": shares,
                     "other": max(0.0, 1.0 - sum(shares)), "arms": len(s.arms)})
    return {"arms": [{"arm": a, "variant": data.variants[a].key, "label": data.labels[a]} for a in top],
            "periods": rows}


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
        logging[j] = _logging_distribution(data.waves.get(key) or [data.snapshots[key]], k)
    contexts = np.array([idx[key[1]] for key in keys], dtype=np.int64)
    return logging, contexts, np.array([sends[key] for key in keys], dtype=np.float64)


def _logging_distribution(snaps: list, k: int) -> np.ndarray:
    """A (period, segment)'s logging distribution over all arms: with waves, the waves' weights
    mixed by how many customers each assigned (what a send of the period was drawn from)."""
    sizes = np.array([s.assigned or 0 for s in snaps], dtype=np.float64)
    shares = sizes / sizes.sum() if sizes.sum() > 0 else np.full(len(snaps), 1.0 / len(snaps))
    mixed = np.zeros(k)
    for snap, share in zip(snaps, shares, strict=True):
        mixed[snap.arms] += share * np.asarray(snap.weights)
    return mixed


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
        {"segment": s.name, "arm": a, "variant": data.variants[a].key if a is not None else None,
         "label": data.labels[a] if a is not None else None}
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
                "label": "old email (control)" if arm == HOLDOUT else data.labels[arm],
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

    tuning = get_settings().report_sequential_tuning_sends
    adjusted = _adjusted(session, data)
    segments, leaders = [], []
    for i, seg in enumerate(data.segments):
        snap = latest.get(seg.id)
        weights = dict(zip(snap.arms, snap.weights, strict=True)) if snap else {}
        control, treated = seg_side.get((seg.id, "control"), Cell()), seg_side.get((seg.id, "bandit"), Cell())
        board = _leaderboard(data, i, seg_arm, posteriors, weights, logged)
        ranked = [r for r in board[objective_metric] if r["p_best"] is not None]
        leaders.append(max(ranked, key=lambda r: (r["p_best"], r["posterior_mean"] or 0))["arm"] if ranked else None)
        segments.append({
            "segment": seg.name,
            "segment_id": seg.id,
            "control": control.public(),
            "bandit": treated.public(),
            "lift": lift(control, treated, tuning),
            "adjusted_lift": adjusted.get(seg.id),
            "arms": _arms(data, seg, seg_arm, control, weights, objective_metric),
            "allocation": None if snap is None else {
                "period": snap.version, "wave": snap.wave, "stage": snap.stage, "reason": snap.reason,
                "top": _top_weights(snap, data.variants, data.labels)},
            "leaderboard": board,
            "factor_effects": _factor_effects(data, i, seg_arm, posteriors, logged),
            "allocation_over_time": _allocation_over_time(data, seg.id),
        })
    events = _events(session, campaign_id)
    drift = _drift(data, per_period)
    srm = _srm(data)
    model = next((p[0].model for p in posteriors.values() if p), None)
    overall_lift = lift(side["control"], side["bandit"], tuning)
    late = _late(session, data)
    happened = _happened(session, data, events, late)
    report = {
        "campaign_id": campaign_id,
        "name": campaign.name,
        "status": campaign.status,
        "status_reason": campaign.status_reason,
        "objective": campaign.objective,
        "objective_metric": objective_metric,
        "holdout_share": campaign.holdout_share,
        "model": model,
        "generated_at": utcnow().isoformat(),
        "periods": len(data.periods),
        "overall": {"control": side["control"].public(), "bandit": side["bandit"].public(),
                    "lift": overall_lift, "adjusted_lift": adjusted.get("overall")},
        "segments": segments,
        "business": _business(data, side, seg_side, overall_lift, segments),
        "learning_curve": _learning_curve(data, logged, side_by_period),
        "off_policy": _off_policy(data, logged, leaders),
        "health": {
            "srm": srm,
            "srm_flagged": sum(r["flagged"] for r in srm),
            "late_data": late,
            "events": events,
            "drift": drift,
        },
        "happened": happened,
        "deliverability": report_deliverability.deliverability(session, data, data.labels),
        # targeted customers that went to other campaigns under the frequency cap
        "shared_customers": report_contention.section(session, campaign_id),
        "events": {"applied": events["applied"], "unattributed": events["unattributed"]},
        # promote / roll back / resume: who did what, why, and each segment's current mode
        "versions": _versions(session, campaign_id),
        "methods": METHODS,
    }
    if campaign.objective == "profit":
        report["profit"] = report_profit.section(session, data, lambda c, b: _money_lift(c, b, tuning))
    report["caveats"] = _caveats(report)
    report["summary"] = _summary(report)
    return report


def _money_lift(control, treated, tuning: float) -> dict:
    """Lift of a per-send amount given as sums (report_profit.Sums), by the revenue lift's method."""
    cells = [Cell(sends=s.sends, revenue=s.profit, revenue_sq=s.profit_sq) for s in (control, treated)]
    out = lift_of(*cells, "revenue_per_send", tuning)
    return {k.replace("incremental_revenue", "incremental_profit"): v for k, v in out.items()}


def consistent_report(campaign_id: int) -> dict:
    """`lift_report` read from one consistent snapshot of the database (no half-folded batch)."""
    with snapshot_scope() as session:
        return lift_report(session, campaign_id)


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
            "label": data.labels[arm],
            "params": data.variants[arm].params,
            **cell.public(),
            **{m: cell.total(m) / cell.sends for m in METRICS},
            "current_weight": _f(weights.get(arm)),
            "lift_vs_control": {m: lift_of(control, cell, m) for m in METRICS},
        })
    rows.sort(key=lambda a: (-a[objective_metric], a["arm"]))
    return rows


def _top_weights(snap, variants, labels, n: int = 5) -> list[dict]:
    ranked = sorted(zip(snap.arms, snap.weights, strict=True), key=lambda aw: -aw[1])[:n]
    return [{"arm": a, "variant": variants[a].key, "label": labels[a], "weight": w} for a, w in ranked]


# ---------------------------------------------------------------------------
# names, allocation-robust arm means, adjustment, the business number, what happened, the summary
# ---------------------------------------------------------------------------


def variant_label(params: dict, factors: dict) -> str:
    """'urgent · free dessert · 10%': the variant's levels in the campaign's factor order."""
    return " · ".join(str(params[f]).replace("_", " ") for f in factors if f in params)


IPW_NONE = {"ipw": None, "ipw_ci95": [None, None]}


def _ipw_means(logged: "Logged", i: int, metric: str, group_of: np.ndarray) -> dict:
    """Per group of arms (an arm, or a factor level): the self-normalised inverse-propensity mean of
    the segment's bandit sends, sum(r / p) / sum(n / p) over the group's sends, p the logged
    probability of the arm among bandit sends. Each period then weighs by its own traffic, whatever
    share the allocation gave the arm in it, so a period with a higher base rate cannot favour the
    arms the bandit happened to send more of then. Variance: the Hajek linearisation."""
    mask = logged.context == i
    if not mask.any():
        return {}
    part = logged.data(metric, mask)
    groups = group_of[part.action]
    keep = groups >= 0
    g, w = groups[keep], 1.0 / part.propensity[keep]
    n, r, sq = part.count[keep], part.reward_sum[keep], part.reward_sq_sum[keep]
    size = int(group_of.max()) + 1 if len(group_of) else 0
    num = np.bincount(g, r * w, minlength=size)
    den = np.bincount(g, n * w, minlength=size)
    out = {}
    for j in np.flatnonzero(den > 0):
        mu = num[j] / den[j]
        sel = g == j
        resid = sq[sel] - 2 * mu * r[sel] + mu * mu * n[sel]
        se = math.sqrt(max(float((w[sel] ** 2 * resid).sum()), 0.0)) / den[j]
        out[int(j)] = {"ipw": _f(mu), "ipw_ci95": [_f(mu - Z95 * se), _f(mu + Z95 * se)]}
    return out


COVARIATES = ("pre-campaign spend", "pre-campaign orders")
_Y = {"click_rate": "click", "conversion_rate": "conv", "revenue_per_send": "rev"}


def _moments(rows, metric: str) -> inference.Moments | None:
    if not rows:
        return None
    t = {k: sum(float(getattr(r, k) or 0) for r in rows) for k in rows[0]._fields if k not in ("segment_id", "side")}
    y = _Y[metric]
    return inference.Moments(
        n=t["n"], sy=t[f"sy_{y}"], syy=t["syy_rev"] if y == "rev" else t[f"sy_{y}"],
        sx=np.array([t["sx1"], t["sx2"]]), sxx=np.array([[t["sx1x1"], t["sx1x2"]], [t["sx1x2"], t["sx2x2"]]]),
        sxy=np.array([t[f"sy1_{y}"], t[f"sy2_{y}"]]))


def _adjusted(session: Session, data: Data) -> dict:
    """Per segment id and "overall", per metric: the holdout lift adjusted for each customer's
    pre-campaign spend and order count (CUPED), with the share of variance it removed."""
    before = data.campaign.started_at or (data.periods[0].created_at if data.periods else None)
    if before is None:
        return {}
    rows = report_repo.pre_campaign_moments(session, [p.id for p in data.periods], before)
    by_key = defaultdict(list)
    for r in rows:
        by_key[(r.segment_id, r.side)].append(r)
        by_key[("overall", r.side)].append(r)
    out = {}
    for key in {k for k, _ in by_key}:
        block = {}
        for metric in METRICS:
            c, t = _moments(by_key.get((key, "control")), metric), _moments(by_key.get((key, "bandit")), metric)
            if c is None or t is None or c.n < 2 or t.n < 2:
                block[metric] = None
                continue
            res = inference.cuped(c, t)
            lo, hi = res.ci(Z95)
            raw_half = Z95 * res.raw_se
            block[metric] = {
                "absolute_lift": _f(res.difference), "absolute_lift_ci95": [_f(lo), _f(hi)],
                "unadjusted_ci95": [_f(res.raw_difference - raw_half), _f(res.raw_difference + raw_half)],
                "variance_reduction": _f(res.variance_reduction),
                "covariates": [COVARIATES[j] for j in res.used], "theta": res.theta, "fallback": res.reason,
            }
        out[key] = block
    return out


BUSINESS = {"conversion_rate": "conversions", "revenue_per_send": "revenue", "click_rate": "clicks"}


def _business(data: Data, side, seg_side, overall_lift: dict, segments: list[dict]) -> dict:
    """Incremental outcomes so far (per segment and in total) and the projection over a year."""
    horizon = get_settings().report_projection_periods
    sent_periods = len({g.period_id for g in data.sent})
    audience = (side["control"].sends + side["bandit"].sends) / sent_periods if sent_periods else 0.0
    out = {"periods_with_sends": sent_periods, "audience_per_period": _f(audience), "horizon_periods": horizon,
           "so_far": {}, "projection": {}}
    for metric, noun in BUSINESS.items():
        lf = overall_lift[metric]
        inc = INCREMENTAL[metric]
        out["so_far"][noun] = {
            "total": lf[inc], "total_ci95": lf[f"{inc}_ci95"],
            "segments": [{"segment": s["segment"], "incremental": s["lift"][metric][inc],
                          "ci95": s["lift"][metric][f"{inc}_ci95"]} for s in segments],
        }
        d, (lo, hi) = lf["absolute_lift"], lf["absolute_lift_ci95"]
        scale = audience * horizon
        out["projection"][noun] = {
            "value": _f(d * scale) if d is not None else None,
            "ci95": [_f(lo * scale) if lo is not None else None, _f(hi * scale) if hi is not None else None],
            "per_period": _f(d * audience) if d is not None else None,
        }
    out["assumptions"] = [
        f"every customer of the current audience (about {audience:,.0f} delivered emails a period, the holdout "
        "included) gets the bandit's emails instead of the old one",
        f"{horizon} more periods like the {sent_periods} measured: the same audience size, the same lift per email "
        "(no novelty wearing off, no seasonality), the same attribution window",
        "the interval is the measured lift's 95% interval times the same volume; it ignores how the future may "
        "differ from the past, so the real uncertainty is larger",
    ]
    return out


FAILURE_NOTES = {
    "suppressed at send time": "the customer unsubscribed or bounced between planning and sending: by design",
    "template failed to render": "the customer's data did not fit the template",
    "refused by the mail server": "permanent refusal (unknown address, policy)",
    "deferred by the mail server until given up": "the server kept deferring the message",
}


def _happened(session: Session, data: Data, events: dict, late: dict) -> dict:
    """Everything that happened to the campaign besides its results: failed sends by reason, feedback
    excluded by rule or not attributed, late data, guard pauses and changes to the campaign."""
    period_ids = [p.id for p in data.periods]
    failed = defaultdict(lambda: {"sends": 0, "periods": {}, "example": None})
    for r in report_repo.failures(session, period_ids):
        f = failed[r.reason]
        f["sends"] += int(r.sends)
        f["periods"][data.number_of[r.period_id]] = int(r.sends)
        f["example"] = f["example"] or r.example
    assigned = sum(g.sends for g in data.groups)
    total_failed = sum(f["sends"] for f in failed.values())
    excluded = [{"type": t, "rule": reason or "unspecified", "events": int(n)}
                for t, reason, n in report_repo.excluded_events(session, data.campaign.id)]
    trips = report_repo.guard_trips(session, data.campaign.id)
    rows = report_repo.campaign_changes(session, data.campaign.id)
    changes = [{"at": r.created_at.isoformat(), "action": r.action, "by": r.key_name, "role": r.key_role}
               for r in rows]
    versions = [{"version": r.detail["template_version"], "from_period": r.detail.get("from_period"),
                 "at": r.created_at.isoformat()} for r in rows if r.action == "template_version"]
    halts = [{"period": r.detail.get("period"), "reason": r.detail.get("reason"), "at": r.created_at.isoformat()}
             for r in rows if r.action == "halt"]
    return {
        "sends_assigned": int(assigned),
        "failed_sends": int(total_failed),
        "failed_share": _f(total_failed / assigned) if assigned else None,
        "failures": sorted(({"reason": k, "sends": v["sends"], "note": FAILURE_NOTES.get(k, ""),
                             # without what differs per customer (an address, an erased one's mask)
                             "example": period_health.reason_of(v["example"]) if v["example"] else "",
                             "periods": [{"period": p, "sends": n} for p, n in sorted(v["periods"].items())]}
                            for k, v in failed.items()), key=lambda x: -x["sends"]),
        "excluded_events": sorted(excluded, key=lambda x: -x["events"]),
        "unattributed_events": events["unattributed"],
        "late_events": late["late"],
        "guard_pauses": [{"period": n, "at": at.isoformat()} for n, at in trips],
        "status_reason": data.campaign.status_reason,
        "campaign_changes": changes,
        "template_edits": sum(c["action"].startswith("PATCH ") for c in changes),
        "template_versions": versions,
        "failure_halts": halts,
    }


def _caveats(r: dict) -> list[str]:
    out = []
    m = r["objective_metric"]
    lf = r["overall"]["lift"][m]
    if r["periods"] > 1:
        out.append("The bandit moved its emails towards the best variants as it learned, so its lift grows over "
                   "time: the lift shown is the average over all periods, not what the bandit achieves today.")
    out.append("The top variant's own numbers flatter it: the best of many noisy estimates is picked because it "
               "looked good (winner's curse). Expect it to do somewhat worse next time.")
    if r["health"]["srm_flagged"]:
        out.append(f"The holdout did not get its planned share in {r['health']['srm_flagged']} period(s) and "
                   "segment(s) (sample-ratio mismatch): something other than chance decided who was in it, so the "
                   "comparison may be biased until the cause is found.")
    h = r["happened"]
    if h["failed_sends"]:
        out.append(f"{h['failed_sends']:,} emails ({100 * (h['failed_share'] or 0):.1f}%) were never delivered; "
                   "they are left out of both sides of the comparison.")
    if complaints := report_deliverability.caveat(r["deliverability"]):
        out.append(complaints)
    if r.get("profit"):
        out.append(report_profit.CAVEAT)
    if lf["relative_lift"] is not None and None in lf["relative_lift_ci95"]:
        out.append("The control group is too small (or converts too rarely) to put bounds on the relative lift; "
                   "read the absolute lift.")
    for side in ("control", "bandit"):
        n, x = r["overall"][side]["sends"], lf[side]
        if n and x is not None and m != "revenue_per_send" and x in (0.0, 1.0):
            who = "the old email" if side == "control" else "the bandit's emails"
            what = METRIC_NAMES[m].split(" per ")[0]
            fact = f"No {what} at all came from {who}" if x == 0 else f"Every one of {who} brought {what}"
            out.append(f"{fact} ({n:,} emails): its uncertainty is then that of half an outcome, an assumption, "
                       "not a measurement. Wait for more emails before quoting the lift.")
    if lf["control"] is None or not r["overall"]["control"]["sends"]:
        out.append("No email of the control group was delivered yet: there is nothing to compare against.")
    late = r["health"]["late_data"]
    if late["share"]:
        out.append(f"{100 * late['share']:.1f}% of the feedback arrived late; the latest period's numbers may "
                   "still rise as feedback comes in.")
    return out


def _pct(x: float | None, signed: bool = True) -> str:
    return "n/a" if x is None else (f"{100 * x:+.1f}%" if signed else f"{100 * x:.2f}%")


def _summary(r: dict) -> str:
    """One paragraph a non-statistician can repeat, written from the numbers."""
    m = r["objective_metric"]
    lf = r["overall"]["lift"][m]
    control, bandit = r["overall"]["control"], r["overall"]["bandit"]
    noun = {"click_rate": "clicks per email", "conversion_rate": "orders per email",
            "revenue_per_send": "revenue per email"}[m]
    if not control["sends"] or not bandit["sends"]:
        return (f"{r['name']} has {r['periods']} period(s) and not yet enough delivered emails on both sides "
                "(the bandit's and the old email's) to compare them.")
    fmt = (lambda v: "n/a" if v is None else f"{v:,.2f}") if m == "revenue_per_send" else \
        (lambda v: _pct(v, signed=False))
    lo, hi = lf["relative_lift_ci95"]
    rel = _pct(lf["relative_lift"])
    rel_ci = f" (95% interval {_pct(lo)} to {_pct(hi)})" if lo is not None else ""
    verdict = {
        "better": "This holds up however often the report has been read: the bandit beats the old email.",
        "worse": "This holds up however often the report has been read: the old email beats the bandit.",
        "undecided": "Judged with an interval that stays valid however often the report is read, the difference "
                     "is not yet established; keep the campaign running before drawing conclusions.",
    }[lf.get("verdict", "undecided")]
    biz = r["business"]
    conv = biz["so_far"]["conversions"]["total"]
    proj = biz["projection"]["revenue" if m == "revenue_per_send" else "conversions"]
    what = "revenue" if m == "revenue_per_send" else "orders"
    relative = (f", a relative lift of {rel}{rel_ci}" if lf["relative_lift"] is not None
                else " (no relative lift: the old email had none to compare with)")
    text = (f"Over {r['periods']} period(s), {bandit['sends']:,} customers got an email chosen by the bandit and "
            f"{control['sends']:,} got the old email. {noun.capitalize()}: {fmt(lf['bandit'])} with the bandit "
            f"against {fmt(lf['control'])} with the old email{relative}. ")
    if conv is not None:
        text += f"That is about {abs(conv):,.0f} {'more' if conv >= 0 else 'fewer'} orders so far. "
    text += verdict
    if proj["value"] is not None and proj["ci95"][0] is not None:
        text += (f" Sent to the whole audience for {biz['horizon_periods']} periods, the bandit's emails would "
                 f"change {what} by about {proj['value']:+,.0f} (95% interval {proj['ci95'][0]:+,.0f} to "
                 f"{proj['ci95'][1]:+,.0f}), if the future looks like the periods measured.")
    h = r["happened"]
    if h["failed_sends"]:
        text += f" {h['failed_sends']:,} emails could not be delivered (see What happened)."
    return text


# ---------------------------------------------------------------------------
# formats: CSV (tidy) and HTML
# ---------------------------------------------------------------------------

CSV_COLUMNS = [
    "segment", "row", "arm", "variant", "metric", "sends", "total", "estimate", "ci95_low", "ci95_high",
    "posterior_mean", "posterior_ci95_low", "posterior_ci95_high", "p_best", "expected_loss", "current_weight",
    "lift_vs_control", "lift_ci95_low", "lift_ci95_high", "relative_lift", "relative_lift_ci95_low",
    "relative_lift_ci95_high", "prob_lift_positive", "anytime_ci95_low", "anytime_ci95_high", "verdict",
    "ipw", "ipw_ci95_low", "ipw_ci95_high", "label",
]


def _csv_lift(lf: dict | None) -> list:
    if lf is None:
        return [None] * 7
    return [lf["absolute_lift"], *lf["absolute_lift_ci95"], lf["relative_lift"], *lf["relative_lift_ci95"],
            lf["prob_lift_positive"]]


def _row(**cols) -> list:
    """A CSV row from named columns, the others empty."""
    return [cols.get(c) for c in CSV_COLUMNS]


def csv_rows(report: dict):
    """Tidy rows: one per segment x arm x metric (plus the control and the bandit as a whole, and
    the overall rows under segment "ALL"). Lift columns: against the segment's control. Then the
    pre-campaign-adjusted lifts (row "adjusted"), the business projection (row "projection") and
    everything that happened (rows "failed_sends", "excluded_events", "unattributed_events",
    "late_events", "guard_pause"), the count in `total`."""
    def side_rows(segment: str, block: dict, lifts: dict):
        for metric in METRICS:
            lf = lifts[metric]
            for label, arm, variant, key in (("control", HOLDOUT, "control", "control"),
                                             ("bandit", None, "all variants", "bandit")):
                n = block[key]["sends"]
                total = block[key][SUM_OF[metric]]
                anytime = lf.get("absolute_lift_anytime_ci95", [None, None]) if key == "bandit" else [None, None]
                yield [segment, label, arm, variant, metric, n, total, lf[key], *lf[f"{key}_ci95"],
                       None, None, None, None, None, None,
                       *(_csv_lift(lf) if key == "bandit" else [None] * 7),
                       *anytime, lf.get("verdict") if key == "bandit" else None, None, None, None,
                       "old email" if key == "control" else "bandit"]
            adj = (block.get("adjusted_lift") or {}).get(metric)
            if adj is not None:
                on = " + ".join(adj["covariates"]) or "nothing: " + (adj["fallback"] or "")
                yield _row(segment=segment, row="adjusted", metric=metric, estimate=adj["variance_reduction"],
                           variant=f"CUPED on {on}",
                           lift_vs_control=adj["absolute_lift"], lift_ci95_low=adj["absolute_lift_ci95"][0],
                           lift_ci95_high=adj["absolute_lift_ci95"][1])

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
                       *_csv_lift(a["lift_vs_control"][metric] if a else None),
                       None, None, None, r["ipw"], *r["ipw_ci95"], r["label"]]
    biz = report["business"]
    for noun, p in biz["projection"].items():
        yield _row(segment="ALL", row="projection", metric=noun, variant=f"{biz['horizon_periods']} periods",
                   estimate=p["value"], ci95_low=p["ci95"][0], ci95_high=p["ci95"][1])
    h = report["happened"]
    for f in h["failures"]:
        yield _row(segment="ALL", row="failed_sends", variant=f["reason"], metric=f["reason"], total=f["sends"])
    for e in h["excluded_events"]:
        what = f"{e['type']} {e['rule']}"
        yield _row(segment="ALL", row="excluded_events", variant=what, metric=what, total=e["events"])
    yield _row(segment="ALL", row="unattributed_events", total=h["unattributed_events"])
    yield _row(segment="ALL", row="late_events", total=h["late_events"])
    for g in h["guard_pauses"]:
        yield _row(segment="ALL", row="guard_pause", arm=g["period"], variant=g["at"], total=1)
    for g in h["failure_halts"]:
        yield _row(segment="ALL", row="failure_halt", arm=g["period"], variant=g["at"], metric=g["reason"], total=1)
    for v in h["template_versions"]:
        yield _row(segment="ALL", row="template_version", arm=v["from_period"], variant=v["at"],
                   metric=f"version {v['version']}", total=1)
    d = report["deliverability"]
    for segment, block in [("ALL", d["overall"]), *((b["segment"], b) for b in d["segments"])]:
        yield from _deliverability_rows(segment, None, None, block)
    for v in d["variants"]:
        yield from _deliverability_rows("ALL", v["arm"], v["label"], v)
    for cols in report_profit.csv_rows(report.get("profit")):
        yield _row(**cols)


def _deliverability_rows(segment: str, arm, label, block: dict):
    """One row per rate: `total` the events (bounces: refused + bounced), `sends` its denominator."""
    counts = {"bounce_rate": (block["refused"] + block["bounced"], block["delivered"] + block["refused"]),
              "complaint_rate": (block["complaints"], block["delivered"]),
              "unsubscribe_rate": (block["unsubscribes"], block["delivered"])}
    for metric, (total, sends) in counts.items():
        yield _row(segment=segment, row="deliverability", arm=arm, variant=label, metric=metric, sends=sends,
                   total=total, estimate=block[metric], label=label)


METRIC_NAMES = {"click_rate": "clicks per email", "conversion_rate": "orders per email",
                "revenue_per_send": "revenue per email"}
CHANGES = {"PATCH": "edited (templates or settings)", "campaigns": "created", "start": "started",
           "pause": "paused", "resume": "resumed", "complete": "completed", "periods": "period started",
           # entries the service writes itself (no API call): a new template version, a failure halt
           "template_version": "new template version", "halt": "halted: too many failed sends (paused)"}


def human_date(value) -> str:
    """'4 Dec 2026, 13:58 UTC' from a datetime or its ISO text."""
    if value is None:
        return "–"
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC)
    return f"{dt.day} {dt:%b %Y, %H:%M} UTC"


def _change(action: str) -> str:
    """'POST /campaigns/{campaign_id}/pause' -> 'paused'."""
    method, _, path = action.partition(" ")
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return CHANGES.get(last) or CHANGES.get(method) or action


def _rate(x, metric: str, signed: bool = False) -> str:
    if x is None:
        return "–"
    if metric == "revenue_per_send":
        return f"{x:+,.3f}" if signed else f"{x:,.3f}"
    return f"{100 * x:+.2f} pt" if signed else f"{100 * x:.2f}%"


def render_html(report: dict) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from campaigns.services import report_charts

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda x, d=1: "–" if x is None else f"{100 * x:.{d}f}%"
    env.filters["num"] = lambda x, d=4: "–" if x is None else f"{x:,.{d}f}"
    env.filters["signed"] = lambda x, d=0: "–" if x is None else f"{x:+,.{d}f}"
    env.filters["spct"] = lambda x, d=1: "–" if x is None else f"{100 * x:+.{d}f}%"
    env.filters["rate"] = _rate
    env.filters["metric"] = lambda m: METRIC_NAMES.get(m, m)
    env.filters["when"] = human_date
    env.filters["change"] = _change
    return env.get_template("report.html").render(r=report, charts=report_charts.charts(report), metrics=METRICS,
                                                  verdicts=VERDICTS)
