"""docs/reference/configuration.md is generated from the settings object and must not drift from it."""

import difflib

from typer.testing import CliRunner

from campaigns import config_reference as reference
from campaigns.cli import app
from campaigns.settings import Settings, get_settings


def test_docs_configuration_md_is_up_to_date_with_the_settings():
    expected = reference.render()
    actual = reference.DOCUMENT.read_text(encoding="utf-8") if reference.DOCUMENT.exists() else ""
    if actual != expected:
        diff = "".join(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True),
                                            "docs/reference/configuration.md", "generated from campaigns/settings.py",
                                            n=0))
        raise AssertionError(
            "docs/reference/configuration.md is out of date with campaigns/settings.py: regenerate it with "
            f"`mab config-reference` (or `python -m campaigns.cli config-reference`).\n{diff[:4000]}"
        )


def test_every_setting_has_exactly_one_row_named_by_its_environment_variable():
    rows = reference.rows()
    assert [r.variable for r in rows] == [f"MAB_{name.upper()}" for name in Settings.model_fields]
    text = reference.render()
    for row in rows:
        assert text.count(f"| `{row.variable}` |") == 1


def test_rows_carry_type_bounds_default_and_description():
    by_name = {r.variable: r for r in reference.rows()}
    chunk = by_name["MAB_SEND_CHUNK_SIZE"]
    assert (chunk.type, chunk.default) == ("integer, ≥ 10", "`5000`")
    assert chunk.description.startswith("Customers per chunk")
    assert by_name["MAB_SMTP_STARTTLS"].default == "`false`"
    assert by_name["MAB_REDIS_URL"].default == "*(empty)*"
    assert by_name["MAB_VAR_DIR"].type == "path"
    # a field without its own description borrows the comment above its group in settings.py
    assert "RFM" in by_name["MAB_RFM_RECENT_DAYS"].description


def test_undocumented_settings_are_named_and_flagged_in_the_document():
    missing = reference.undocumented()
    fields = Settings.model_fields
    assert all(not fields[v[4:].lower()].description for v in missing)
    text = reference.render()
    for variable in missing:
        line = next(line for line in text.splitlines() if line.startswith(f"| `{variable}` |"))
        assert line.endswith(f"{reference.NO_DESCRIPTION} |")


def test_table_cells_cannot_break_the_markdown_table():
    assert reference._cell("a | b\n c") == "a \\| b c"
    for line in reference.render().splitlines():
        if line.startswith("| `MAB_"):
            assert line.count(" | ") - line.count("\\| ") == 3, line


def test_the_cli_writes_the_reference_and_checks_it(tmp_path):
    out = tmp_path / "configuration.md"
    runner = CliRunner()
    stale = runner.invoke(app, ["config-reference", "--check", "--output", str(out)])
    assert stale.exit_code == 1 and "out of date" in stale.output
    wrote = runner.invoke(app, ["config-reference", "--output", str(out)])
    assert wrote.exit_code == 0, wrote.output
    assert out.read_text(encoding="utf-8") == reference.render()
    fresh = runner.invoke(app, ["config-reference", "--check", "--output", str(out)])
    assert fresh.exit_code == 0 and "up to date" in fresh.output
    out.write_text(out.read_text(encoding="utf-8").replace("MAB_SEND_CHUNK_SIZE", "MAB_SEND_CHUNKS"))
    assert runner.invoke(app, ["config-reference", "--check", "--output", str(out)]).exit_code == 1


def test_mab_up_starts_as_many_api_processes_as_mab_api_workers_says(monkeypatch):
    from campaigns.stack import api_workers_option

    monkeypatch.delenv("MAB_API_WORKERS", raising=False)
    get_settings.cache_clear()
    assert api_workers_option({}) == []  # one process: uvicorn's default, no supervisor
    assert api_workers_option({"MAB_API_WORKERS": "3"}) == ["--workers", "3"]
    monkeypatch.setenv("MAB_API_WORKERS", "2")
    get_settings.cache_clear()
    assert api_workers_option({}) == ["--workers", "2"]
    get_settings.cache_clear()
