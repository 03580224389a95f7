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


def _check_plot(plot):
    assert plot.exists() and plot.stat().st_size > 0
    data = plot.read_bytes()
    if plot.suffix == ".png":
        assert data.startswith(PNG_SIGNATURE)
    else:
        root = ET.fromstring(data)  # noqa: S314 -- a file we just wrote
        assert root.tag.endswith("svg")


def test_simulate_factorial_prints_policies_and_writes_svg(tmp_path):
    plot = tmp_path / "regret.svg"
    result = _run(
        "--periods", "2", "--customers", "4000", "--segments", "2",
        "--policies", ",".join(POLICIES), "--seed", "1", "--plot", str(plot),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for policy in POLICIES:
        assert policy in result.output
    assert "share of oracle" in result.output
    _check_plot(plot)


def test_simulate_bernoulli_writes_png(tmp_path):
    plot = tmp_path / "regret.png"
    policies = ("uniform", "epsilon_greedy", "independent_ts", "oracle")
    result = _run("--environment", "bernoulli", "--arms", "3", "--periods", "3", "--customers", "900",
                  "--policies", ",".join(policies), "--plot", str(plot))  # fmt: skip
    assert result.exit_code == 0, result.output
    for policy in policies:
        assert policy in result.output
    _check_plot(plot)


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
