"""Geometry of the HTML report's charts, computed server side: templates/report.html turns it into
inline SVG (no JavaScript library, no CDN: the page works offline and in any browser).

Every function takes the report dict and returns plain numbers and strings for the template.
"""

import math

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
OTHER = "#c7c7c7"
WIDTH = 760
TEXT_W = 180  # room for the value and its interval at the right of a row
LABEL_W = 190
ROW_H = 26
PAD = 14
LEADERBOARD_ROWS = 10
METRIC_LABEL = {"click_rate": "click rate", "conversion_rate": "conversion per send",
                "revenue_per_send": "revenue per send"}


def _scale(lo: float, hi: float, x0: float, x1: float):
    if hi - lo < 1e-12:
        lo, hi = lo - 1.0, hi + 1.0
    return lambda v: x0 + (v - lo) / (hi - lo) * (x1 - x0)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi - lo < 1e-12:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt_pct(v: float) -> str:
    return f"{100 * v:+.1f}%"


def lift_chart(report: dict, metric: str) -> dict:
    """Relative lift (bandit / control - 1) with its 95% interval, overall and per segment."""
    blocks = [("overall", report["overall"]["lift"][metric])]
    blocks += [(s["segment"], s["lift"][metric]) for s in report["segments"]]
    values = []
    for _, lf in blocks:
        if lf["relative_lift"] is not None:
            values += [v for v in (lf["relative_lift"], *lf["relative_lift_ci95"]) if v is not None]
    lo, hi = min([0.0, *values]), max([0.0, *values])
    span = hi - lo or 1.0
    lo, hi = lo - 0.05 * span, hi + 0.05 * span
    x = _scale(lo, hi, LABEL_W, WIDTH - TEXT_W)
    top = PAD + 12
    rows = []
    for j, (label, lf) in enumerate(blocks):
        y = top + j * ROW_H + ROW_H / 2
        rel = lf["relative_lift"]
        ci = lf["relative_lift_ci95"]
        ok = rel is not None and None not in ci
        rows.append({
            "label": label, "y": y, "missing": not ok,
            "x": x(rel) if ok else None, "x_lo": x(ci[0]) if ok else None, "x_hi": x(ci[1]) if ok else None,
            "text": f"{_fmt_pct(rel)} [{_fmt_pct(ci[0])}, {_fmt_pct(ci[1])}]" if ok else "n/a",
            "positive": ok and ci[0] > 0, "negative": ok and ci[1] < 0,
        })
    height = top + len(blocks) * ROW_H + 28
    ticks = [{"x": x(t), "label": f"{100 * t:.0f}%" if span >= 0.05 else f"{100 * t:.1f}%"}
             for t in _ticks(lo, hi)]
    return {"id": f"chart-lift-{metric}", "metric": metric, "title": f"Relative lift of {METRIC_LABEL[metric]}",
            "width": WIDTH, "text_x": WIDTH - TEXT_W + 10, "height": height, "zero_x": x(0.0), "top": top - 8,
            "bottom": height - 24,
            "rows": rows, "ticks": ticks}


def allocation_chart(segment: dict, index: int) -> dict:
    """Stacked area of the weights per period: the top variants and the rest ("other")."""
    over = segment["allocation_over_time"]
    periods = over["periods"]
    left, right, top, bottom = 50, WIDTH - 10, PAD, 190
    labels = [a.get("label") or a["variant"] for a in over["arms"]] + ["other"]
    colors = PALETTE[: len(over["arms"])] + [OTHER]
    bands = []
    if periods:
        xs = ([left, right] if len(periods) == 1 else
              [left + i * (right - left) / (len(periods) - 1) for i in range(len(periods))])
        stacks = [[*p["weights"], p["other"]] for p in periods]
        if len(periods) == 1:
            stacks = stacks * 2
        y = _scale(0.0, 1.0, bottom, top)
        base = [0.0] * len(xs)
        for b in range(len(labels)):
            upper = [base[i] + stacks[i][b] for i in range(len(xs))]
            pts = [(xs[i], y(upper[i])) for i in range(len(xs))] + [(xs[i], y(base[i])) for i in
                                                                   reversed(range(len(xs)))]
            bands.append({"label": labels[b], "color": colors[b],
                          "points": " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)})
            base = upper
        xticks = [{"x": xs[i] if len(periods) > 1 else (left + right) / 2, "label": _period_label(p)}
                  for i, p in enumerate(periods)]
    else:
        xticks = []
    legend = [{"label": lab, "color": col, "y": bottom + 40 + i * 16} for i, (lab, col) in
              enumerate(zip(labels, colors, strict=True))] if periods else []
    height = bottom + 40 + 16 * len(legend) + 6
    return {"id": f"chart-alloc-{index}", "segment": segment["segment"], "width": WIDTH, "height": height,
            "left": left, "right": right, "top": top, "bottom": bottom, "bands": bands, "xticks": xticks,
            "yticks": [{"y": _scale(0.0, 1.0, bottom, top)(v), "label": f"{v:.0%}"} for v in (0, 0.25, 0.5, 0.75, 1)],
            "legend": legend, "periods": len(periods)}


def leaderboard_chart(segment: dict, index: int, metric: str) -> dict:
    """Top variants by posterior mean: bars with 95% credible-interval whiskers, P(best) beside."""
    rows = [r for r in segment["leaderboard"][metric] if r["posterior_mean"] is not None][:LEADERBOARD_ROWS]
    hi = max([r["posterior_ci95"][1] or 0.0 for r in rows] + [r["posterior_mean"] for r in rows] + [1e-9])
    x = _scale(0.0, hi * 1.05, LABEL_W + 40, WIDTH - 80)
    top = PAD
    out = []
    for j, r in enumerate(rows):
        y = top + j * ROW_H
        lo_ci, hi_ci = r["posterior_ci95"]
        out.append({"label": r.get("label") or r["variant"], "short": r.get("label") or _short(r["variant"]), "y": y,
                    "bar_w": max(x(r["posterior_mean"]) - x(0.0), 0.5), "x0": x(0.0),
                    "lo": x(lo_ci if lo_ci is not None else r["posterior_mean"]),
                    "hi": x(hi_ci if hi_ci is not None else r["posterior_mean"]),
                    "mean": r["posterior_mean"], "p_best": r["p_best"], "weight": r["current_weight"]})
    return {"id": f"chart-leaderboard-{index}", "segment": segment["segment"], "metric": metric,
            "width": WIDTH, "height": top + len(out) * ROW_H + 24, "rows": out,
            "ticks": [{"x": x(t), "label": f"{t:.3g}"} for t in _ticks(0.0, hi * 1.05, 4)],
            "axis_y": top + len(out) * ROW_H + 4}


def _short(variant: str) -> str:
    return " · ".join(part.split("=", 1)[-1] for part in variant.split("|"))


def learning_chart(report: dict, metric: str) -> dict:
    """Cumulative successes of the bandit against uniform allocation (IPS, with its band) and the
    control's rate on the same sends."""
    rows = report["learning_curve"][metric]
    left, right, top, bottom = 70, WIDTH - 10, PAD, 200
    series = {
        "bandit": [r["cumulative_bandit"] for r in rows],
        "uniform": [r["cumulative_uniform_ips"] for r in rows],
        "control": [r["cumulative_control_rate_x_sends"] for r in rows],
    }
    band_lo = [r["cumulative_uniform_ips_ci95"][0] for r in rows]
    band_hi = [r["cumulative_uniform_ips_ci95"][1] for r in rows]
    values = [v for s in (*series.values(), band_lo, band_hi) for v in s if v is not None]
    hi = max(values + [1e-9])
    y = _scale(0.0, hi * 1.05, bottom, top)
    n = len(rows)
    xs = [(left + right) / 2] if n == 1 else [left + i * (right - left) / max(n - 1, 1) for i in range(n)]
    lines = []
    for (name, vals), color in zip(series.items(), ("#1f77b4", "#ff7f0e", "#7f7f7f"), strict=True):
        pts = [(xs[i], y(v)) for i, v in enumerate(vals) if v is not None]
        lines.append({"name": name, "color": color, "points": " ".join(f"{a:.1f},{b:.1f}" for a, b in pts),
                      "dots": [{"x": a, "y": b} for a, b in pts]})
    band = ""
    if n and None not in band_lo and None not in band_hi:
        pts = [(xs[i], y(band_hi[i])) for i in range(n)] + [(xs[i], y(band_lo[i])) for i in reversed(range(n))]
        band = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
    return {"id": "chart-learning", "metric": metric, "width": WIDTH, "height": bottom + 50, "left": left,
            "right": right, "top": top, "bottom": bottom, "lines": lines, "band": band,
            "xticks": [{"x": xs[i], "label": str(r["period"])} for i, r in enumerate(rows)],
            "yticks": [{"y": y(t), "label": f"{t:,.4g}"} for t in _ticks(0.0, hi * 1.05, 4)]}


def charts(report: dict) -> dict:
    metric = report["objective_metric"]
    return {
        "lift": [lift_chart(report, m) for m in ("click_rate", "conversion_rate", "revenue_per_send")],
        "allocation": [allocation_chart(s, i) for i, s in enumerate(report["segments"])],
        "leaderboard": [leaderboard_chart(s, i, metric) for i, s in enumerate(report["segments"])],
        "learning": learning_chart(report, metric),
    }


def _period_label(row: dict) -> str:
    """A period's tick, "3", or "3·w2" for its second wave."""
    wave = row.get("wave", 1)
    return str(row["period"]) if wave == 1 else f"{row['period']}·w{wave}"
