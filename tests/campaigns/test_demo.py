"""The demo prints the report's lift whatever the report holds, including no relative lift at all."""

from campaigns.demo import lift_line


def _report(control, bandit, rel, ci):
    return {"overall": {"lift": {"conversion_rate": {"control": control, "bandit": bandit, "relative_lift": rel,
                                                     "absolute_lift_ci95": ci}}}}


def test_lift_line_with_numbers():
    line = lift_line(_report(0.02, 0.03, 0.5, [0.001, 0.019]))
    assert "control 0.0200" in line and "relative lift +50.0%" in line and "+0.0010 … +0.0190" in line


def test_lift_line_without_a_relative_lift_or_interval():
    # a small audience: the control converted nobody, or nothing was delivered on one side yet
    line = lift_line(_report(0.0, 0.03, None, [None, None]))
    assert "relative lift n/a" in line and "n/a … n/a" in line
    assert "control n/a" in lift_line(_report(None, None, None, [None, None]))
