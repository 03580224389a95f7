"""`mab campaign apply` and `mab campaign preview`: campaigns kept as files (SQLite and PostgreSQL)."""

import yaml
from sqlalchemy import func, select
from typer.testing import CliRunner

from campaigns.cli import app as cli
from campaigns.db import session_scope
from campaigns.models import Campaign
from campaigns.schemas import CustomerIn
from campaigns.services import campaigns as campaign_service
from campaigns.services import customers
from tests.factories import small_campaign_payload


def write(tmp_path, data: dict, name: str = "campaign.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def said(result) -> str:
    return " ".join(result.output.split())  # rich wraps long lines at the terminal's width


def campaign_count() -> int:
    with session_scope() as s:
        return s.execute(select(func.count()).select_from(Campaign)).scalar_one()


def test_apply_creates_then_updates_a_draft_and_preview_prints_the_email(database_url, tmp_path):
    with session_scope() as s:
        customers.import_customers(s, customers.json_rows([CustomerIn(
            external_id="c1", email="ann@example.com", segment="champions", attributes={"first_name": "Ann"})]))
    data = small_campaign_payload(name="Spring", cadence="weekly", schedule={"weekday": "friday", "hour": 8})
    runner = CliRunner()
    result = runner.invoke(cli, ["campaign", "apply", write(tmp_path, data)])
    assert result.exit_code == 0, result.output
    assert "created draft campaign" in said(result)
    with session_scope() as s:
        cid = s.execute(select(Campaign.id)).scalar_one()
    data = {"id": cid, **data, "name": "Spring v2", "template": {**data["template"], "subject": "Hi {{ tone }}"}}
    result = runner.invoke(cli, ["campaign", "apply", write(tmp_path, data)])
    assert result.exit_code == 0 and f"updated campaign {cid} (draft)" in said(result), result.output
    with session_scope() as s:
        stored = campaign_service.get(s, cid)
        assert (stored.name, stored.subject_template, stored.schedule["weekday"]) == ("Spring v2", "Hi {{ tone }}",
                                                                                      "friday")
    assert campaign_count() == 1
    result = runner.invoke(cli, ["campaign", "preview", str(cid), "--customer", "c1", "--variant",
                                 "tone:urgent,offer:free_drink"])
    assert result.exit_code == 0, result.output
    assert "Subject: Hi urgent" in result.output and "To: ann@example.com" in result.output
    assert "free_drink" in result.output


def test_apply_refuses_bad_files_naming_the_field_and_writes_nothing(database_url, tmp_path):
    runner = CliRunner()
    bad = small_campaign_payload(holdout_share=0.9)
    result = runner.invoke(cli, ["campaign", "apply", write(tmp_path, bad)])
    assert result.exit_code == 1 and "holdout_share" in result.output
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    result = runner.invoke(cli, ["campaign", "apply", str(tmp_path / "broken.yaml")])
    assert result.exit_code == 1 and "not valid YAML" in said(result)
    assert campaign_count() == 0
    ok = small_campaign_payload()
    assert runner.invoke(cli, ["campaign", "apply", write(tmp_path, ok)]).exit_code == 0
    with session_scope() as s:
        cid = s.execute(select(Campaign.id)).scalar_one()
    changed = {"id": cid, **ok, "factors": {"tone": ["friendly"], "offer": ["free_drink"]}}
    result = runner.invoke(cli, ["campaign", "apply", write(tmp_path, changed)])
    assert result.exit_code == 1 and "factors" in result.output and "fixed once created" in said(result)
    result = runner.invoke(cli, ["campaign", "preview", str(cid), "--customer", "nobody"])
    assert result.exit_code == 1 and "no customer" in said(result)
