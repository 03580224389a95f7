"""Outbox and log retention: the hourly beat job, and `mab outbox prune`."""

import os
import time

import pytest
from typer.testing import CliRunner

from campaigns.cli import app
from campaigns.errors import InvalidInput
from campaigns.services import retention
from campaigns.settings import get_settings
from worker import tasks
from worker.app import celery_app

DAY = 86_400
NOW = 1_800_000_000.0


def write(path, content: bytes, age_days: float, now: float = NOW):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (now - age_days * DAY, now - age_days * DAY))
    return path


@pytest.fixture
def outbox(tmp_path):
    root = tmp_path / "outbox"
    files = {
        "old": write(root / "c1" / "p1" / "1.eml", b"a" * 100, 20),
        "old_tmp": write(root / "c1" / "p1" / ".123-abc.tmp", b"b" * 10, 20),
        "new": write(root / "c1" / "p2" / "2.eml", b"c" * 50, 1),
        "other": write(root / "c1" / "p1" / "notes.txt", b"keep", 20),
        "old_alone": write(root / "c2" / "p1" / "3.eml", b"d" * 7, 30),
    }
    return root, files


def test_prune_deletes_only_old_outbox_files_and_the_folders_it_empties(outbox):
    root, files = outbox
    result = retention.prune_outbox(root, 14, now=NOW)
    assert result == retention.Pruned(files=3, bytes=117, directories=2)  # c2/p1 and c2
    assert not files["old"].exists() and not files["old_tmp"].exists() and not files["old_alone"].exists()
    assert files["new"].exists() and files["other"].exists()
    assert not (root / "c2").exists() and (root / "c1" / "p1").is_dir() and root.is_dir()
    assert retention.prune_outbox(root, 14, now=NOW) == retention.Pruned(0, 0, 0)  # nothing left to do


def test_a_dry_run_counts_the_same_and_deletes_nothing(outbox):
    root, files = outbox
    before = sorted(p for p in root.rglob("*"))
    assert retention.prune_outbox(root, 14, dry_run=True, now=NOW) == retention.Pruned(3, 117, 0)
    assert sorted(p for p in root.rglob("*")) == before
    assert retention.prune_outbox(root, 0, dry_run=True, now=NOW).files == 4  # everything the outbox wrote


def test_a_missing_outbox_or_a_negative_age(tmp_path):
    assert retention.prune_outbox(tmp_path / "none", 1) == retention.Pruned(0, 0, 0)
    with pytest.raises(InvalidInput):
        retention.prune_outbox(tmp_path, -1)


def test_logs_past_the_cap_are_moved_aside_and_restarted_while_a_writer_keeps_appending(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "small.log").write_bytes(b"x" * 10)
    big = logs / "worker.log"
    big.write_bytes(b"old line\n" * 200)
    (logs / "worker.log.1").write_bytes(b"older copy")
    with open(big, "ab") as writer:  # what `mab up` hands a child: its log, open for appending
        assert retention.trim_logs(logs, 1_000) == ["worker.log"]
        writer.write(b"after\n")
    assert (logs / "worker.log.1").read_bytes() == b"old line\n" * 200
    assert big.read_bytes() == b"after\n"  # written at the new end, not past a hole
    assert (logs / "small.log").read_bytes() == b"x" * 10
    assert retention.trim_logs(logs, 0) == [] and retention.trim_logs(tmp_path / "none", 10) == []


def settings_for(monkeypatch, tmp_path, **env):
    monkeypatch.setenv("MAB_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("MAB_OUTBOX_DIR", str(tmp_path / "outbox"))
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_settings():
    yield
    get_settings.cache_clear()


def test_the_beat_job_applies_both_settings(tmp_path, monkeypatch):
    settings_for(monkeypatch, tmp_path, MAB_OUTBOX_RETENTION_DAYS=14, MAB_LOG_MAX_BYTES=100)
    now = time.time()
    old = write(tmp_path / "outbox" / "c1" / "1.eml", b"a" * 10, 15, now)
    new = write(tmp_path / "outbox" / "c1" / "2.eml", b"b" * 10, 13, now)
    write(tmp_path / "var" / "logs" / "api.log", b"z" * 200, 0, now)
    result = tasks.apply_retention.apply().get()  # as a worker runs it
    assert result == {"outbox_files": 1, "outbox_bytes": 10, "logs_trimmed": ["api.log"]}
    assert not old.exists() and new.exists()

    settings_for(monkeypatch, tmp_path, MAB_OUTBOX_RETENTION_DAYS=0, MAB_LOG_MAX_BYTES=0)
    write(tmp_path / "var" / "logs" / "api.log", b"z" * 200, 0, now)
    assert retention.apply_retention() == {"outbox_files": 0, "outbox_bytes": 0, "logs_trimmed": []}
    assert new.exists()


def test_beat_runs_the_job_hourly():
    entry = celery_app.conf.beat_schedule["apply-retention"]
    assert entry["task"] == "worker.tasks.apply_retention" and entry["schedule"] == 3600.0
    assert entry["task"] in celery_app.tasks


def test_mab_outbox_prune(tmp_path, monkeypatch):
    settings_for(monkeypatch, tmp_path, MAB_OUTBOX_RETENTION_DAYS=14)
    now = time.time()
    old = write(tmp_path / "outbox" / "1.eml", b"a" * 2_000_000, 20, now)
    mid = write(tmp_path / "outbox" / "2.eml", b"b" * 10, 5, now)
    runner = CliRunner()
    r = runner.invoke(app, ["outbox", "prune", "--dry-run"])
    assert r.exit_code == 0 and "would delete 1 files (2.0 MB) older than 14 days" in r.output, r.output
    assert old.exists()
    r = runner.invoke(app, ["outbox", "prune"])
    assert r.exit_code == 0 and "deleted 1 files" in r.output and not old.exists() and mid.exists(), r.output
    r = runner.invoke(app, ["outbox", "prune", "--older-than", "2"])
    assert r.exit_code == 0 and "deleted 1 files" in r.output and not mid.exists(), r.output
    r = runner.invoke(app, ["outbox", "prune", "--older-than", "-1"])
    assert r.exit_code == 2 and "0 or more" in r.output

    settings_for(monkeypatch, tmp_path, MAB_OUTBOX_RETENTION_DAYS=0)
    r = runner.invoke(app, ["outbox", "prune"])
    assert r.exit_code == 1 and "keep forever" in r.output
