"""`mab simulate` end to end through typer's CliRunner (tiny configuration, no timings)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from campaigns.cli import app

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
POLICIES = ("uniform", "epsilon_greedy", "independent_ts", "structured_ts", "oracle")


def _run(*args: str):
    return CliRunner().invoke(app, ["simulate", *args], env={"COLUMNS": "200"})


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_simulate_prints_policies_and_writes_plot(tmp_path, suffix):
    plot = tmp_path / f"regret{suffix}"
    result = _run(
        "--periods", "2", "--customers", "8000", "--segments", "2",
        "--policies", ",".join(POLICIES), "--seed", "1", "--plot", str(plot),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for policy in POLICIES:
        assert policy in result.output
    assert "share of oracle" in result.output
    assert plot.exists() and plot.stat().st_size > 0
    data = plot.read_bytes()
    if suffix == ".png":
        assert data.startswith(PNG_SIGNATURE)
    else:
        root = ET.fromstring(data)  # noqa: S314 -- a file we just wrote
        assert root.tag.endswith("svg")


def test_simulate_bernoulli_without_plot():
    result = _run("--environment", "bernoulli", "--arms", "3", "--periods", "2", "--customers", "600",
                  "--policies", "uniform,independent_ts,oracle")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "independent_ts" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--environment", "nope"], "environment"),
        (["--policies", "uniform,bogus"], "bogus"),
        (["--plot", "regret.pdf"], "plot"),
        (["--objective", "likes"], "objective"),
    ],
)
def test_simulate_bad_input_is_a_usage_error(args, needle):
    result = _run("--periods", "1", "--customers", "100", *args)
    assert result.exit_code != 0
    assert needle in result.output
