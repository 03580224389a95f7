"""The report's three formats over real HTTP (SQLite and PostgreSQL): JSON, tidy CSV, HTML."""

import csv
import io
import re

import pytest

from campaigns.services import reports
from tests.campaigns.test_periods import setup_campaign
from tests.campaigns.test_report import all_sends, feedback, run_periods


@pytest.fixture
def campaign(api):
    cid = setup_campaign(400, holdout_share=0.25, name="Spring <script>alert(1)</script> & co")
    run_periods(cid, 2)
    feedback(all_sends(cid), seed=2)
    return cid


def test_json_csv_and_html_agree(api, campaign):
    r = api("GET", f"/campaigns/{campaign}/report", "analyst")
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["periods"] == 2 and len(rep["segments"]) == 2

    r = api("GET", f"/campaigns/{campaign}/report.csv", "analyst")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == reports.CSV_COLUMNS
    arms = sum(len(seg["leaderboard"]["click_rate"]) for seg in rep["segments"])
    core = [x for x in rows if x["row"] in ("control", "bandit", "arm")]
    assert len(core) == 3 * 2 * 3 + arms * 3  # (overall + 2 segments) x (control, bandit) x metrics + arms x metrics
    assert {x["row"] for x in rows} - {"control", "bandit", "arm"} <= {
        "adjusted", "projection", "failed_sends", "excluded_events", "unattributed_events", "late_events",
        "guard_pause", "deliverability"}
    # the page's numbers: the anytime-valid interval and the projection
    assert float(next(x for x in rows if x["segment"] == "ALL" and x["row"] == "bandit"
                      and x["metric"] == "click_rate")["anytime_ci95_low"]) == pytest.approx(
        rep["overall"]["lift"]["click_rate"]["absolute_lift_anytime_ci95"][0])
    proj = next(x for x in rows if x["row"] == "projection" and x["metric"] == "conversions")
    assert float(proj["estimate"]) == pytest.approx(rep["business"]["projection"]["conversions"]["value"])
    # tidy: (segment, row, arm, metric) identifies a row
    assert len({(x["segment"], x["row"], x["arm"], x["metric"]) for x in rows}) == len(rows)
    overall = next(x for x in rows if x["segment"] == "ALL" and x["row"] == "bandit" and x["metric"] == "click_rate")
    lift = rep["overall"]["lift"]["click_rate"]
    assert float(overall["lift_vs_control"]) == pytest.approx(lift["absolute_lift"])
    assert float(overall["lift_ci95_low"]) == pytest.approx(lift["absolute_lift_ci95"][0])
    assert int(overall["sends"]) == rep["overall"]["bandit"]["sends"]
    seg = rep["segments"][1]
    best = seg["leaderboard"]["conversion_rate"][0]
    row = next(x for x in rows if x["segment"] == seg["segment"] and x["row"] == "arm"
               and x["arm"] == str(best["arm"]) and x["metric"] == "conversion_rate")
    assert float(row["posterior_mean"]) == pytest.approx(best["posterior_mean"])
    assert float(row["p_best"]) == pytest.approx(best["p_best"])
    assert int(row["sends"]) == best["sends"]

    r = api("GET", f"/campaigns/{campaign}/report.html", "analyst")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    # the campaign's name is user input: escaped, never markup
    assert "<script>alert(1)" not in html and "Spring &lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    # self-contained: no external scripts, styles or images
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert len(re.findall(r'<svg class="chart lift-chart"', html)) == 3
    assert len(re.findall(r'<g class="lift-row"', html)) == 3 * 3
    assert len(re.findall(r'<svg class="chart allocation-chart"', html)) == 2
    assert len(re.findall(r'<svg class="chart leaderboard-chart"', html)) == 2
    assert 'id="chart-learning"' in html


def test_admin_reads_the_report_and_unknown_campaigns_are_404(api, campaign):
    for suffix in ("", ".csv", ".html"):
        assert api("GET", f"/campaigns/{campaign}/report{suffix}", "admin").status_code == 200
        r = api("GET", f"/campaigns/999/report{suffix}", "analyst")
        assert r.status_code == 404 and r.json() == {"error": "not_found", "detail": "no campaign with id 999"}
        assert api("GET", f"/campaigns/{campaign}/report{suffix}", "marketer").status_code == 200
        assert api("GET", f"/campaigns/{campaign}/report{suffix}", "ingest").status_code == 403
