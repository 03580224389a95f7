"""`mab campaigns`, `mab report` and the admin key of `mab up`: the terminal shows what the API
serves, read through the same services from the database the settings name."""

import csv

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from typer.testing import CliRunner

from api.app import create_app
from campaigns import cli, reading_cli
from campaigns.db import session_scope
from campaigns.repositories import campaigns as repo
from campaigns.services import report_pdf, reports
from tests.campaigns.test_periods import setup_campaign
from tests.campaigns.test_report import all_sends, feedback, run_periods
from tests.factories import api_keys

runner = CliRunner()


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setattr(reading_cli, "console", Console(width=220, force_terminal=False, color_system=None))


@pytest.fixture
def reported(sqlite_url, redis_server):
    cid = setup_campaign(300, holdout_share=0.2)
    run_periods(cid, 2)
    feedback(all_sends(cid), seed=5)
    return cid


def test_campaigns_lists_status_and_last_period(reported, wide):
    draft = setup_campaign(0)  # a second campaign, started but never sent
    out = runner.invoke(cli.app, ["campaigns"])
    assert out.exit_code == 0, out.output
    lines = {line.split("│")[1].strip(): line for line in out.output.splitlines() if line.count("│") > 3}
    assert set(lines) >= {str(reported), str(draft)}
    assert "active" in lines[str(reported)] and "#2 completed" in lines[str(reported)]
    with session_scope() as s:
        last = max(repo.periods(s, reported), key=lambda p: p.number)
    total = sum(1 for x in all_sends(reported) if x.period_id == last.id)  # the ledger's count, not the counter's
    assert f"{total:,}/{total:,} sent" in lines[str(reported)]
    assert "none yet" in lines[str(draft)]


def test_report_prints_the_lift_and_writes_the_api_files(reported, wide, tmp_path):
    html, csv_file = tmp_path / "r" / "report.html", tmp_path / "report.csv"
    out = runner.invoke(cli.app, ["report", str(reported), "--html", str(html), "--csv", str(csv_file)])
    assert out.exit_code == 0, out.output
    with TestClient(create_app()) as client:
        headers = {"X-API-Key": api_keys()["analyst"]}
        api_report = client.get(f"/campaigns/{reported}/report", headers=headers).json()
        api_csv = client.get(f"/campaigns/{reported}/report.csv", headers=headers).text
    # the terminal shows the API's overall relative lift for each metric, and every segment
    for metric, lf in api_report["overall"]["lift"].items():
        assert f"{lf['relative_lift']:+.1%}" in out.output, metric
    for seg in api_report["segments"]:
        assert seg["segment"] in out.output
    # the files hold the same numbers as the API's exports
    assert list(csv.reader(csv_file.open())) == list(csv.reader(api_csv.splitlines()))
    page = html.read_text()
    assert page.startswith("<!") and api_report["name"] in page
    assert page.count("<svg") == len(reports.render_html(api_report).split("<svg")) - 1


@pytest.mark.skipif(report_pdf.find_browser() is None, reason="chromium is not installed")
def test_report_pdf_is_printed_by_chromium(reported, wide, tmp_path):
    pdf = tmp_path / "out" / "report.pdf"
    out = runner.invoke(cli.app, ["report", str(reported), "--pdf", str(pdf)])
    assert out.exit_code == 0, out.output
    assert f"PDF report: {pdf}" in out.output
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and data.count(b"/Type /Page") - data.count(b"/Type /Pages") >= 2


def test_report_pdf_without_a_browser_is_a_clear_error(reported, wide, tmp_path, monkeypatch):
    monkeypatch.setattr(report_pdf, "find_browser", lambda: None)
    pdf = tmp_path / "report.pdf"
    out = runner.invoke(cli.app, ["report", str(reported), "--pdf", str(pdf)])
    assert out.exit_code == 1
    assert "no PDF: no headless browser" in out.output and "install chromium" in out.output
    assert not pdf.exists()


def test_report_of_an_unknown_campaign_says_so(sqlite_url, wide):
    out = runner.invoke(cli.app, ["report", "987654"])
    assert out.exit_code == 1
    assert "no campaign with id 987654" in out.output


def test_admin_key_is_shown_only_when_created(sqlite_url, tmp_path, monkeypatch):
    from campaigns.settings import get_settings

    monkeypatch.setenv("MAB_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    (tmp_path / "var").mkdir()
    try:
        # the test database has keys already; a fresh one has none
        with session_scope() as s:
            from sqlalchemy import delete

            from campaigns.models import ApiKey

            s.execute(delete(ApiKey))
        key, created = cli._ensure_admin_key()
        assert created and key and (tmp_path / "var" / "admin.key").read_text().strip() == key
        assert (tmp_path / "var" / "admin.key").stat().st_mode & 0o777 == 0o600
        again, created_again = cli._ensure_admin_key()
        assert (again, created_again) == (key, False)
    finally:
        get_settings.cache_clear()
