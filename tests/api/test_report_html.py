"""The HTML report in a real browser: uvicorn serves it, headless Chromium (network blocked, so
anything not inline would be missing) renders it, and the DOM it dumps must hold every chart the
server drew -- counted by the page's own script inside the browser too -- and no script error,
nor any debug text a reader would see."""

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import httpx
import pytest

from campaigns.stack import free_port, wait_for
from tests.campaigns.test_periods import setup_campaign
from tests.campaigns.test_report import all_sends, feedback, run_periods
from tests.factories import api_keys

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it: .ci/run)")


class Elements(HTMLParser):
    """Counts elements by (tag, class) and keeps the attributes and text of the ones with an id."""

    def __init__(self):
        super().__init__()
        self.counts: dict[tuple[str, str], int] = {}
        self.by_id: dict[str, dict] = {}
        self.body: dict = {}
        self._open_id: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for cls in (a.get("class") or "").split():
            self.counts[(tag, cls)] = self.counts.get((tag, cls), 0) + 1
        if tag == "body":
            self.body = a
        if "id" in a:
            self.by_id[a["id"]] = {**a, "tag": tag, "text": ""}
            self._open_id = a["id"]

    def handle_endtag(self, tag):
        self._open_id = None

    def handle_data(self, data):
        if self._open_id:
            self.by_id[self._open_id]["text"] += data


def chromium(*args: str, home) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={home}/profile", "--host-resolver-rules=MAP * ~NOTFOUND", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(home)})


@pytest.fixture
def served_report(sqlite_url, redis_server, tmp_path):
    cid = setup_campaign(600, holdout_share=0.2)
    run_periods(cid, 3)
    feedback(all_sends(cid), seed=3)
    key = api_keys()["analyst"]
    port = free_port()
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port",
                            str(port)], env={**os.environ, "MAB_DATABASE_URL": sqlite_url},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, "uvicorn", 60)
        r = httpx.get(f"{base}/campaigns/{cid}/report.html", headers={"X-API-Key": key}, timeout=60)
        assert r.status_code == 200, r.text
        report = httpx.get(f"{base}/campaigns/{cid}/report", headers={"X-API-Key": key}, timeout=60).json()
    finally:
        api.terminate()
        api.wait(20)
    # The page needs an API key, which a browser cannot send from the command line: save what the
    # server sent and open that file.
    page = tmp_path / "report.html"
    page.write_text(r.text, encoding="utf-8")
    return page, report


def test_charts_render_in_headless_chromium(served_report, tmp_path):
    page, report = served_report
    out = chromium("--dump-dom", page.as_uri(), home=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = Elements()
    dom.feed(out.stdout)

    segments = len(report["segments"])
    assert dom.body.get("data-rendered") == "yes", "the page's script did not run to its end"
    assert "data-js-errors" not in dom.body, dom.body.get("data-js-errors")
    # every chart the server drew was parsed by the browser as an SVG element
    expected_charts = 3 + segments + segments + 1  # lift per metric, leaderboard and allocation per segment, learning
    assert dom.body.get("data-charts-server") == str(expected_charts)
    assert dom.body.get("data-charts-browser") == str(expected_charts)
    assert dom.counts[("svg", "chart")] == expected_charts
    for metric in ("click_rate", "conversion_rate", "revenue_per_send"):
        assert dom.by_id[f"chart-lift-{metric}"]["tag"] == "svg"
    assert dom.counts[("g", "lift-row")] == 3 * (1 + segments)
    assert dom.counts[("circle", "point")] == 3 * (1 + segments)  # every lift has an estimate here
    for i in range(segments):
        assert dom.by_id[f"chart-alloc-{i}"]["tag"] == "svg"
        assert dom.by_id[f"chart-leaderboard-{i}"]["tag"] == "svg"
    top = [len(seg["allocation_over_time"]["arms"]) + 1 for seg in report["segments"]]
    assert dom.counts[("polygon", "alloc-band")] == sum(top)
    bars = sum(min(10, len(seg["leaderboard"][report["objective_metric"]])) for seg in report["segments"])
    assert dom.counts[("rect", "bar")] == bars
    assert dom.counts[("polyline", "series")] == 3
    # the lift chart shows the numbers of the JSON report
    rel = report["overall"]["lift"]["click_rate"]["relative_lift"]
    assert f"{100 * rel:+.1f}%" in out.stdout
    # for people: a summary first, human dates, variant names from factor levels, no debug text
    assert dom.by_id["summary"]["text"].strip() == report["summary"]
    assert report["generated_at"] not in out.stdout and "Charts rendered" not in out.stdout
    assert "subject_tone=" not in out.stdout and "|offer=" not in out.stdout

    # and it paints: a screenshot in colour, not a blank or an error page
    shot = tmp_path / "report.png"
    out = chromium(f"--screenshot={shot}", "--window-size=1200,2400", "--hide-scrollbars", page.as_uri(),
                   home=tmp_path)
    assert out.returncode == 0 and shot.exists(), out.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 2400)
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
    # many colours, among them the learning curve's blue and orange
    assert colors is not None and len(colors) > 50
    palette = {rgb for _, rgb in colors}
    assert any(_near(c, (0x1f, 0x77, 0xb4)) for c in palette) and any(_near(c, (0xff, 0x7f, 0x0e)) for c in palette)
    assert re.search(r"PNG", shot.read_bytes()[:8].decode("latin-1"))


def _near(a, b, tol: int = 12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))
