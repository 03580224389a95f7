"""/docs and /redoc work with no internet: every script, stylesheet and image they name is served by
the app itself, and headless Chromium, with every host but 127.0.0.1 unresolvable, renders both."""

import os
import subprocess
import sys
from html.parser import HTMLParser

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from campaigns.stack import free_port, wait_for
from tests.api.test_report_html import CHROMIUM

PAGES = ("/docs", "/redoc")


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def page_links(html: str) -> list[str]:
    parser = Links()
    parser.feed(html)
    # the URLs handed to the UIs' own scripts are in the inline script, quoted
    for quoted in html.split("'")[1::2] + html.split('"')[1::2]:
        if quoted.startswith(("http:", "https:", "//")):
            parser.urls.append(quoted)
    return parser.urls


@pytest.mark.parametrize("path", PAGES)
def test_pages_name_only_their_own_assets(sqlite_url, path):
    with TestClient(create_app()) as client:
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        links = page_links(r.text)
        assert any(u.endswith(".js") for u in links), links
        for url in links:
            assert url.startswith("/") and not url.startswith("//"), f"{path} loads {url} from another host"
            assert client.get(url).status_code == 200, url
        assert client.get("/openapi.json").status_code == 200


def test_pages_stay_out_of_the_openapi_document(sqlite_url):
    """The pages are not part of the API's own document."""
    with TestClient(create_app()) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert not set(PAGES) & set(paths)
    assert not any(p.startswith("/docs-assets") for p in paths)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it: .ci/run)")
def test_both_render_offline_in_chromium(sqlite_url, redis_server, tmp_path):
    port = free_port()
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port",
                            str(port)], env={**os.environ, "MAB_DATABASE_URL": sqlite_url},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, "uvicorn", 60)
        doms = {path: _dump_dom(f"{base}{path}", tmp_path) for path in PAGES}
    finally:
        api.terminate()
        api.wait(20)
    # Swagger UI drew one block per operation of the document; ReDoc drew its menu and the title
    assert doms["/docs"].count('class="opblock ') > 20, doms["/docs"][:2000]
    assert "MAB Campaigns" in doms["/redoc"] and doms["/redoc"].count("<li") > 20, doms["/redoc"][:2000]


def _dump_dom(url: str, home) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--disable-background-networking", f"--user-data-dir={home}/profile",
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=15000",
           "--dump-dom", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(home)})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout
