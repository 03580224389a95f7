"""The report's profit section: the sums of per-send profit from per-group moments equal the per-send
sums, and a profit campaign's profit lift (value and interval) equals a recomputation from the
ledger send by send, with the holdout priced without level costs."""

import math
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console
from sqlalchemy import select

from campaigns.db import session_scope
from campaigns.models import Customer, Event, PeriodStatus, Segment, Send
from campaigns.reading_cli import lift_table
from campaigns.services import events, feedback_mail, periods, report_profit, reports
from tests.campaigns.test_profit import ECONOMICS, profit_campaign

Z95 = 1.959963984540054


def test_group_sums_equal_the_per_send_sums():
    rng = np.random.default_rng(3)
    n = 500
    conv = (rng.random(n) < 0.2).astype(float)
    revenue = conv * rng.gamma(2.0, 15.0, n)
    unsub = (rng.random(n) < 0.05).astype(float)
    a, b, u = 0.35, 4.5, 12.0
    profit = a * revenue - b * conv - u * unsub
    row = SimpleNamespace(sends=n, conversions=conv.sum(), revenue=revenue.sum(), revenue_sq=(revenue ** 2).sum(),
                          unsubscribes=unsub.sum(), revenue_conv=(revenue * conv).sum(),
                          revenue_unsub=(revenue * unsub).sum(), conv_unsub=(conv * unsub).sum())
    sums = report_profit.group_sums(row, a, b, u)
    assert (sums.sends, sums.unsubscribes) == (n, unsub.sum())
    assert math.isclose(sums.profit, profit.sum(), rel_tol=1e-12)
    assert math.isclose(sums.profit_sq, (profit ** 2).sum(), rel_tol=1e-12)


def _per_send_profit(cid: int) -> tuple[dict, dict]:
    """The profit of every delivered send, computed send by send: per side, and per (segment, arm)."""
    with session_scope() as s:
        sends = list(s.execute(select(Send).where(Send.campaign_id == cid, Send.status == "sent")).scalars())
        unsubscribed = set(s.execute(select(Event.send_id).where(Event.type == "unsubscribe")).scalars())
        names = dict(s.execute(select(Segment.id, Segment.name)).all())
    share = {0: 0.0, 1: ECONOMICS["level_costs"]["offer"]["half_price"]["share"]}
    side, arm = defaultdict(list), defaultdict(list)
    for x in sends:
        net = ECONOMICS["margin"] - (0.0 if x.arm == -1 else share[x.arm])
        value = net * x.revenue - ECONOMICS["unsubscribe_cost"] * (x.id in unsubscribed)
        side["control" if x.arm == -1 else "bandit"].append(value)
        arm[(names[x.segment_id], x.arm)].append(value)
    return ({k: np.asarray(v) for k, v in side.items()}, {k: np.asarray(v) for k, v in arm.items()})


def test_profit_lift_equals_a_per_send_recomputation(database_url, redis_server):
    cid = profit_campaign(400, holdout_share=0.5)
    with session_scope() as s:
        pid = periods.start_period(s, cid).id
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    with session_scope() as s:
        sends = list(s.execute(select(Send).where(Send.period_id == pid).order_by(Send.id)).scalars())
    # a known dataset: every 4th send orders (revenue 20 + its position mod 7), every 9th unsubscribes
    batch = []
    for i, x in enumerate(sends):
        if i % 4 == 0:
            batch += [{"event_id": f"k{x.id}", "type": "click", "send_id": x.id, "occurred_at": None},
                      {"event_id": f"v{x.id}", "type": "conversion", "send_id": x.id, "revenue": 20.0 + i % 7,
                       "occurred_at": None}]
    with session_scope() as s:
        events.process_events(s, batch)
        for x in sends[::9]:
            feedback_mail.record_unsubscribe(s, x, s.get(Customer, x.customer_id), "test")
    with session_scope() as s:
        rep = reports.lift_report(s, cid)

    per_send, per_arm = _per_send_profit(cid)
    c, b = per_send["control"], per_send["bandit"]
    assert len(c) + len(b) == len(sends) and len(c) > 100 and len(b) > 100
    lf = rep["profit"]["overall"]["lift"]
    diff = b.mean() - c.mean()
    se = math.sqrt(b.var(ddof=1) / len(b) + c.var(ddof=1) / len(c))
    assert math.isclose(lf["control"], c.mean(), rel_tol=1e-9)
    assert math.isclose(lf["bandit"], b.mean(), rel_tol=1e-9)
    assert math.isclose(lf["absolute_lift"], diff, rel_tol=1e-9)
    assert lf["absolute_lift_ci95"] == pytest.approx([diff - Z95 * se, diff + Z95 * se], rel=1e-9)
    assert math.isclose(lf["relative_lift"], b.mean() / c.mean() - 1, rel_tol=1e-9)
    assert math.isclose(lf["incremental_profit"], diff * len(b), rel_tol=1e-9)
    overall = rep["profit"]["overall"]
    assert overall["control"]["sends"] == len(c) and overall["bandit"]["sends"] == len(b)
    assert overall["control"]["unsubscribes"] + overall["bandit"]["unsubscribes"] == len(sends[::9])
    # the segments add up to the whole; the revenue lift is still there beside it
    assert sum(sg["bandit"]["sends"] for sg in rep["profit"]["segments"]) == len(b)
    assert math.isclose(sum(sg["bandit"]["profit"] for sg in rep["profit"]["segments"]), b.sum(), rel_tol=1e-9)
    assert rep["overall"]["lift"]["revenue_per_send"]["absolute_lift"] is not None
    assert any("no level costs" in c for c in rep["caveats"])

    # per variant: its profit per email from its own sends, best first
    for seg in rep["profit"]["segments"]:
        assert sum(v["sends"] for v in seg["variants"]) == seg["bandit"]["sends"]
        ranked = [v["profit_per_send"] for v in seg["variants"]]
        assert ranked == sorted(ranked, reverse=True)
        for v in seg["variants"]:
            mine = per_arm[(seg["segment"], v["arm"])]
            assert v["sends"] == len(mine) and math.isclose(v["profit_per_send"], mine.mean(), rel_tol=1e-9)

    rows = [r for r in reports.csv_rows(rep) if r[reports.CSV_COLUMNS.index("metric")] == "profit_per_send"]
    assert sum(r[1] in ("control", "bandit") for r in rows) == 2 * (1 + len(rep["profit"]["segments"]))
    assert sum(r[1] == "arm" for r in rows) == sum(len(sg["variants"]) for sg in rep["profit"]["segments"])
    bandit_all = next(r for r in rows if r[0] == "ALL" and r[1] == "bandit")
    assert bandit_all[reports.CSV_COLUMNS.index("lift_vs_control")] == lf["absolute_lift"]
    console = Console(width=200, record=True)
    console.print(lift_table(rep))  # `mab report` in a terminal
    assert f"{lf['absolute_lift']:,.2f}" in console.export_text().split("profit per send")[1].splitlines()[0]
    html = reports.render_html(rep)
    assert "Profit against the old email" in html and f"{lf['absolute_lift']:+,.3f}" in html
    assert "objective: profit per email" in html  # the header names the campaign's objective, not revenue


def test_other_objectives_have_no_profit_section(database_url, redis_server):
    cid = profit_campaign(40, objective="revenue", economics=None)
    with session_scope() as s:
        pid = periods.start_period(s, cid).id
    periods.run_period(pid)
    with session_scope() as s:
        rep = reports.lift_report(s, cid)
    assert "profit" not in rep
    assert not [r for r in reports.csv_rows(rep) if r[reports.CSV_COLUMNS.index("metric")] == "profit_per_send"]
    assert "Profit against" not in reports.render_html(rep)
