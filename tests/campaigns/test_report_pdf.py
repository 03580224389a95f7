"""The HTML report printed to PDF by headless Chromium (skipped where it is not installed)."""

import pytest

from campaigns.errors import Unavailable
from campaigns.services import report_pdf, reports
from tests.campaigns.test_periods import setup_campaign
from tests.campaigns.test_report import report, run_periods


def test_no_browser_is_a_clear_error(tmp_path):
    with pytest.raises(Unavailable, match="could not print|no headless browser"):
        report_pdf.html_to_pdf("<p>x</p>", browser=str(tmp_path / "no-such-browser"))


@pytest.mark.skipif(report_pdf.find_browser() is None, reason="chromium is not installed")
def test_the_report_prints_to_a_pdf(database_url, redis_server):
    cid = setup_campaign(200)
    run_periods(cid, 1)
    pdf = report_pdf.html_to_pdf(reports.render_html(report(cid)))
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert pdf.count(b"/Type /Page") - pdf.count(b"/Type /Pages") >= 2  # the report spans pages
