"""The alerting rules shipped in the manual (docs/operator/alerts.yml) name only metrics the service
exports, so a renamed metric cannot leave an alert that never fires."""

import re
from pathlib import Path

import yaml

import campaigns.metrics as metrics_module

RULES = Path(__file__).resolve().parents[2] / "docs" / "operator" / "alerts.yml"
DECLARED = re.compile(r'(Counter|Gauge|Histogram|GaugeMetricFamily)\(\s*"(mab_[a-z_]+)"')


def exported_names() -> set[str]:
    names = set()
    for kind, name in DECLARED.findall(Path(metrics_module.__file__).read_text()):
        if kind == "Counter":
            names.add(name if name.endswith("_total") else f"{name}_total")
        elif kind == "Histogram":
            names |= {f"{name}_{s}" for s in ("bucket", "count", "sum")}
        else:
            names.add(name)
    return names


def test_every_alert_names_exported_metrics_only():
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert len(rules) >= 5
    exported = exported_names()
    assert {"mab_period_halts_total", "mab_periods_in_flight", "mab_send_failures_total"} <= exported
    for rule in rules:
        named = set(re.findall(r"\bmab_[a-z_]+", rule["expr"]))
        assert named and named <= exported, (rule["alert"], named - exported)
        assert rule["annotations"]["summary"]
