"""The manual cannot rot: it builds with `mkdocs build --strict`, its generated references match
the code, and the examples it shows (docs/examples/, included verbatim in the pages) run against a
live stack: uvicorn, a Celery worker and beat, a redis-server and SQLite."""

import json
import os
import re
import shutil
import subprocess

import httpx
import pytest

from campaigns import cli_reference
from campaigns.schemas import CampaignCreate
from campaigns.settings import PROJECT_ROOT
from campaigns.stack import Stack, free_port
from tests.conftest import fresh_database, point_at
from tests.factories import api_keys

DOCS = PROJECT_ROOT / "docs"
EXAMPLES = DOCS / "examples"


def test_the_manual_builds_strictly(tmp_path):
    """`mab docs --build` runs `mkdocs build --strict`: a broken link or a missing page fails it."""
    from typer.testing import CliRunner

    from campaigns.cli import app

    out = CliRunner().invoke(app, ["docs", "--build", str(tmp_path / "site")])
    assert out.exit_code == 0, out.output[-4000:]
    pages = list((tmp_path / "site").rglob("index.html"))
    assert len(pages) > 20  # one per page of the nav (MkDocs' directory URLs)
    # the examples are included verbatim in the pages that show them
    tour = (tmp_path / "site" / "getting-started" / "index.html").read_text(encoding="utf-8")
    assert "small-campaign.json" in tour and "periods/1/sends.csv" in tour


def test_every_page_of_the_nav_exists_and_every_page_is_in_the_nav():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)  # MkDocs' !!python/name tags
    nav = yaml.load((PROJECT_ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)["nav"]  # noqa: S506 (a SafeLoader)

    def files(entries):
        for entry in entries:
            for value in (entry.values() if isinstance(entry, dict) else [entry]):
                yield from (files(value) if isinstance(value, list) else [value])

    listed = set(files(nav))
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert listed <= on_disk, listed - on_disk
    assert on_disk <= listed, on_disk - listed
    for page in on_disk:
        first = (DOCS / page).read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# "), page


def test_the_cli_and_api_references_match_the_code():
    from api import reference as api_reference

    for module in (cli_reference, api_reference):
        expected = module.render()
        actual = module.DOCUMENT.read_text(encoding="utf-8")
        assert actual == expected, f"{module.DOCUMENT} is out of date: run `python -m {module.__name__}`"
    # every command is documented, with its options
    cli_text = cli_reference.DOCUMENT.read_text(encoding="utf-8")
    for command in ("up", "send", "campaigns", "report", "docs", "create-key", "config-reference"):
        assert f"## `mab {command}`" in cli_text
    assert "`--html`" in cli_text and "`--csv`" in cli_text


def test_the_reference_checks_fail_on_a_stale_file(tmp_path, monkeypatch):
    stale = tmp_path / "cli.md"
    stale.write_text(cli_reference.render().replace("mab report", "mab rapport"), encoding="utf-8")
    monkeypatch.setattr(cli_reference, "DOCUMENT", stale)
    assert cli_reference.main(["--check"]) == 1
    assert cli_reference.main([]) == 0 and cli_reference.main(["--check"]) == 0


def test_the_readme_is_short_and_links_into_the_manual():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    command = re.search(r"<!-- test-command -->\n```bash\n(.+)\n```\n<!-- /test-command -->", readme)
    assert command and command[1].endswith(".venv/bin/pytest -q")
    first = re.search(r"```bash\n(.+)\n```", readme)[1]
    assert first.endswith(".venv/bin/mab up --demo")
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not link.startswith(("http:", "https:"))]
    assert any(link.startswith("docs/") for link in local)
    for link in local:
        assert (PROJECT_ROOT / link).exists(), link
    assert "docs/examples/restaurant-campaign.json" in readme


@pytest.mark.parametrize("name, variants, segments", [("restaurant-campaign.json", 200, 8),
                                                       ("small-campaign.json", 6, 2)])
def test_the_example_campaigns_are_valid(name, variants, segments):
    body = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    campaign = CampaignCreate(**body)
    grid = 1
    for levels in campaign.factors.values():
        grid *= len(levels)
    assert (grid, len(campaign.segments)) == (variants, segments)


@pytest.fixture
def live(request, workdir, tmp_path):
    home = tmp_path / "home"
    (home / "var" / "logs").mkdir(parents=True)
    url = fresh_database("sqlite", request, workdir)
    port = free_port()
    point_at(url, home / "var" / "outbox")
    stack = Stack(var_dir=home / "var")
    stack.env.update(MAB_DATABASE_URL=url, MAB_OUTBOX_DIR=str(home / "var" / "outbox"),
                     MAB_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    try:
        stack.env["MAB_REDIS_URL"] = stack.start_redis()
        stack.start_services("127.0.0.1", port, concurrency=1)
        key = api_keys()["admin"]
        (home / "var" / "admin.key").write_text(key + "\n")
        yield {"url": f"http://127.0.0.1:{port}", "key": key, "home": home}
    finally:
        stack.stop()


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("curl") is None, reason="the examples use curl")
def test_the_examples_run_against_a_live_stack(live):
    # exactly what the getting-started page tells a newcomer to run, from the folder of `mab up`
    out = subprocess.run([shutil.which("bash"), str(EXAMPLES / "quickstart.sh")], cwd=live["home"], capture_output=True,
                         text=True, timeout=300, env={"PATH": os.environ["PATH"], "API": live["url"]})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    customers = sum(1 for _ in (EXAMPLES / "customers.csv").open()) - 1
    small = json.loads((EXAMPLES / "small-campaign.json").read_text())
    # the 2 targeted segments of the 8 the CSV spreads its customers over
    reached = customers * len(small["segments"]) // 8
    assert f'"received":{customers}' in out.stdout.replace(" ", "")
    assert re.search(rf"period 1: completed {reached} {reached}", out.stdout), out.stdout
    emails = list((live["home"] / "var" / "outbox").rglob("*.eml"))
    assert len(emails) == reached
    sends = re.search(r"sends: (\d+) bandit, (\d+) holdout", out.stdout)
    assert sends and int(sends[1]) + int(sends[2]) == reached

    # the restaurant case: 200 variants over 8 segments, accepted as the marketer's guide shows it
    with httpx.Client(base_url=live["url"], headers={"X-API-Key": live["key"]}, timeout=60) as http:
        r = http.post("/campaigns", content=(EXAMPLES / "restaurant-campaign.json").read_bytes(),
                      headers={"Content-Type": "application/json"})
        assert r.status_code == 201, r.text
        assert (r.json()["variant_count"], len(r.json()["segments"])) == (200, 8)
        assert http.post(f"/campaigns/{r.json()['id']}/start").json()["status"] == "active"


def test_no_page_speaks_of_the_tracker():
    for page in DOCS.rglob("*.md"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"\b(issue|session) \d+", text, re.IGNORECASE), page
    assert not re.search(r"\bissue \d+", (PROJECT_ROOT / "README.md").read_text(), re.IGNORECASE)
