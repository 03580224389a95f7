"""`mab demo`: the whole loop through the real API, with synthetic customers and feedback.

A hidden "true" model (factor effects plus one segment interaction) decides who clicks and
converts, so a newcomer can watch the allocation move toward the variants that really work
and read the lift against the holdout at the end.
"""

import csv
import io
import time

import httpx
import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

SEGMENTS = [
    "champions", "loyal_regulars", "big_spenders", "new_or_occasional",
    "cant_lose_them", "at_risk_regulars", "lapsed_big_spenders", "hibernating",
]
FACTORS = {
    "tone": ["friendly", "urgent", "playful", "premium"],
    "offer": ["free_dessert", "free_drink", "two_for_one", "family_meal", "free_delivery"],
    "discount": ["0%", "5%", "10%", "15%", "20%", "25%", "30%", "35%", "40%", "50%"],
}
TEMPLATE = {
    "subject": "{{ customer.first_name | default('Hi') }}, {{ offer | replace('_', ' ') }} and {{ discount }} off",
    "html": (
        "<html><body><p>Hello {{ customer.first_name | default('there') }},</p>"
        "<p>A {{ tone }} note: enjoy <b>{{ offer | replace('_', ' ') }}</b> with {{ discount }} off.</p>"
        '<p><a href="{{ landing_url }}">Order now</a></p>'
        '<p style="font-size:small"><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
    ),
    "text": (
        "Hello {{ customer.first_name | default('there') }},\n"
        "Enjoy {{ offer | replace('_', ' ') }} with {{ discount }} off: {{ landing_url }}\n"
        "Unsubscribe: {{ unsubscribe_url }}\n"
    ),
}


def demo_campaign() -> dict:
    return {
        "name": "Weekly restaurant offer (demo)",
        "factors": FACTORS,
        # Champions are never offered the deepest discounts: a per-segment exclusion.
        "exclusions": [{"when": {"discount": ["40%", "50%"]}, "segments": ["champions"]}],
        "segments": SEGMENTS,
        "objective": "conversion",
        "holdout_share": 0.1,
        "baseline": {"tone": "friendly", "offer": "free_dessert", "discount": "10%"},
        "cadence": "manual",
        "landing_url": "https://restaurant.example.com/order",
        "template": TEMPLATE,
        "burn_in_min_sends": 5,
    }


def true_rates(params: dict, segment: str) -> tuple[float, float]:
    """The hidden truth: click rate and conversion-given-click of a message in a segment."""
    tone = {"friendly": 0.0, "urgent": 0.25, "playful": -0.2, "premium": 0.1}[params["tone"]]
    offer = {"free_dessert": 0.1, "free_drink": -0.1, "two_for_one": 0.45, "family_meal": 0.2,
             "free_delivery": 0.0}[params["offer"]]
    discount = float(params["discount"].rstrip("%")) / 100
    logit_click = -3.3 + tone + offer + 1.2 * discount
    if segment in ("champions", "big_spenders") and params["tone"] == "premium":
        logit_click += 0.5  # a segment interaction: big spenders like the premium tone
    click = 1 / (1 + np.exp(-logit_click))
    convert = min(0.05 + 0.25 * discount + (0.04 if params["offer"] == "two_for_one" else 0.0), 0.5)
    return float(click), float(convert)


class Demo:
    def __init__(self, base_url: str, api_key: str, console: Console | None = None, seed: int = 7):
        self.http = httpx.Client(base_url=base_url, headers={"X-API-Key": api_key}, timeout=120)
        self.console = console or Console()
        self.rng = np.random.default_rng(seed)

    def call(self, method: str, path: str, **kw) -> httpx.Response:
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text}")
        return r

    def load_customers(self, n: int) -> None:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["external_id", "email", "segment", "first_name"])
        names = ["Ana", "Ben", "Chloé", "Dev", "Eli", "Fatima", "Gus", "Hana"]
        for i in range(n):
            w.writerow([f"demo-{i:07d}", f"demo{i}@example.com", SEGMENTS[i % 8], names[i % len(names)]])
        r = self.call("POST", "/customers/csv", content=buf.getvalue().encode(), headers={"Content-Type": "text/csv"})
        self.console.print(f"customers loaded: {r.json()}")

    def run_period(self, campaign_id: int) -> dict:
        period = self.call("POST", f"/campaigns/{campaign_id}/periods").json()
        with Progress(console=self.console, transient=True) as bar:
            task = bar.add_task(f"period {period['number']}: sending", total=None)
            while period["status"] not in ("completed", "failed"):
                time.sleep(0.5)
                period = self.call("GET", f"/campaigns/{campaign_id}/periods/{period['number']}").json()
                bar.update(task, total=period["total"] or None, completed=period["sent"] + period["failed"])
        if period["status"] == "failed":
            raise RuntimeError(f"period {period['number']} failed: {period['error']}")
        return period

    def feedback(self, campaign_id: int, number: int, variants: dict[int, dict]) -> int:
        """Simulate who clicked and converted, and post it through the bulk events API."""
        text = self.call("GET", f"/campaigns/{campaign_id}/periods/{number}/sends.csv").text
        rows = [r for r in csv.DictReader(io.StringIO(text)) if r["status"] == "sent"]
        events = []
        for r in rows:
            arm = int(r["arm"])
            params = variants[arm] if arm >= 0 else self.baseline
            click, convert = true_rates(params, r["segment"])
            if self.rng.random() < click:
                events.append({"event_id": f"c-{r['send_id']}", "type": "click", "send_id": int(r["send_id"])})
                if self.rng.random() < convert:
                    events.append({"event_id": f"v-{r['send_id']}", "type": "conversion",
                                   "send_id": int(r["send_id"]), "revenue": round(float(self.rng.gamma(2, 15)), 2)})
        for start in range(0, len(events), 5_000):
            self.call("POST", "/events", json={"events": events[start : start + 5_000]})
        return len(events)

    def wait_for_events(self, campaign_id: int, expected: int, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            # The stored report: a read of one behind its data asks the workers to recompute it.
            report = self.call("GET", f"/campaigns/{campaign_id}/report").json()
            done = report["events"]["applied"] >= expected and report["freshness"]["state"] == "current"
            if done or time.monotonic() > deadline:
                return report
            time.sleep(0.5)

    def show_allocation(self, report: dict, number: int) -> None:
        table = Table(title=f"Allocation used in period {number} (top 3 variants per segment)")
        table.add_column("segment")
        table.add_column("stage")
        table.add_column("top variants (weight)")
        for seg in report["segments"]:
            alloc = seg["allocation"] or {}
            if alloc.get("stage") == "burn_in":
                top = "equal weights until every variant has a few sends"
            else:
                top = ", ".join(
                    f"{'/'.join(v.split('=')[1] for v in t['variant'].split('|'))} {t['weight']:.1%}"
                    for t in alloc.get("top", [])[:3]
                )
            table.add_row(seg["segment"], alloc.get("stage", "-"), top)
        self.console.print(table)

    def run(self, customers: int = 16_000, periods: int = 4) -> dict:
        self.load_customers(customers)
        campaign = self.call("POST", "/campaigns", json=demo_campaign()).json()
        cid = campaign["id"]
        self.baseline = campaign["baseline"]
        self.console.print(f"campaign {cid} created: {campaign['variant_count']} variants × 8 segments")
        variants = {v["arm"]: v["params"] for v in self.call("GET", f"/campaigns/{cid}/variants").json()}
        self.call("POST", f"/campaigns/{cid}/start")
        posted = 0
        report = {}
        for _ in range(periods):
            period = self.run_period(cid)
            posted += self.feedback(cid, period["number"], variants)
            report = self.wait_for_events(cid, posted)
            self.console.print(f"period {period['number']}: {period['sent']} sent; {posted} events so far")
            self.show_allocation(report, period["number"])
        self.console.print(lift_line(report))
        if report.get("summary"):
            self.console.print(report["summary"])
        self.next_steps(cid)
        return report

    def next_steps(self, campaign_id: int) -> None:
        """Where to look next: the emails, the report (a browser cannot send the key header the
        report's URL needs, so `mab report` writes the page to a file), the manual."""
        from campaigns.settings import get_settings

        settings = get_settings()
        base = str(self.http.base_url).rstrip("/")
        self.console.print(
            "\n[bold]Next steps[/] (in another terminal, in this folder)\n"
            f"  the emails      one .eml file per send under {settings.outbox_dir}/\n"
            f"  the report      .venv/bin/mab report {campaign_id} --open   (or --html report.html, --csv report.csv)\n"
            "  your campaigns  .venv/bin/mab campaigns\n"
            "  the manual      .venv/bin/mab docs, then http://127.0.0.1:8001 (its pages are in docs/)\n"
            f"  the API         {base}/docs, with the admin key in {settings.var_dir / 'admin.key'}"
        )


def _fmt(x, spec: str) -> str:
    """A number of the report, or "n/a" where the report has none (no delivered control email yet,
    or a control without conversions: the relative lift is then undefined)."""
    return "n/a" if x is None else format(x, spec)


def lift_line(report: dict) -> str:
    lift = report["overall"]["lift"]["conversion_rate"]
    lo, hi = lift["absolute_lift_ci95"]
    return (f"[bold]Conversion per send[/]: control {_fmt(lift['control'], '.4f')}, "
            f"bandit {_fmt(lift['bandit'], '.4f')}, relative lift {_fmt(lift['relative_lift'], '+.1%')} "
            f"(absolute 95% CI {_fmt(lo, '+.4f')} … {_fmt(hi, '+.4f')})")
