"""`mab campaigns`, `mab report` and `mab docs`: everyday reading from the terminal.

Registered by campaigns/cli.py. The commands read the database named by the settings (like the
workers do) through the same services as the API, so the terminal shows the numbers of
`GET /campaigns` and `GET /campaigns/{id}/report`."""

from __future__ import annotations

import csv
import subprocess
import sys
import webbrowser
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()
METRIC_LABEL = {"click_rate": "clicks per send", "conversion_rate": "conversions per send",
                "revenue_per_send": "revenue per send", "profit_per_send": "profit per send"}


def _when(dt) -> str:
    return "–" if dt is None else dt.strftime("%Y-%m-%d %H:%M")


def campaigns_cmd() -> None:
    """List the campaigns with their status and last send period."""
    from campaigns.db import session_scope
    from campaigns.services import campaigns as service

    with session_scope() as session:
        rows = service.overview(session)
    if not rows:
        console.print("no campaigns yet: create one with POST /campaigns (see the manual's marketer's guide)")
        return
    table = Table(title="Campaigns")
    for name, justify in (("id", "right"), ("name", "left"), ("status", "left"), ("objective", "left"),
                          ("variants", "right"), ("segments", "right"), ("last period", "left")):
        table.add_column(name, justify=justify)
    for c in rows:
        p = c["last_period"]
        last = "none yet" if p is None else (
            f"#{p['number']} {p['status']}: {p['sent']:,}/{p['total']:,} sent"
            + (f", {p['failed']:,} failed" if p["failed"] else "")
            + f" ({_when(p['completed_at'] or p['created_at'])})"
            + (f", next wave at {_when(p['next_wave_at'])} UTC" if p.get("next_wave_at") else ""))
        status = c["status"] + (f" ({c['status_reason']})" if c.get("status_reason") else "")
        table.add_row(str(c["id"]), c["name"], status, c["objective"], f"{c['variant_count']:,}",
                      str(len(c["segments"])), last)
    console.print(table)


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def _num(x: float | None, metric: str) -> str:
    if x is None:
        return "–"
    return f"{x:,.2f}" if metric in ("revenue_per_send", "profit_per_send") else f"{100 * x:.2f}%"


def _ci(pair: list, fmt) -> str:
    return "–" if pair is None or None in pair else f"{fmt(pair[0])} … {fmt(pair[1])}"


def lift_table(report: dict) -> Table:
    """Overall lift for every metric, then each segment's lift on the campaign's objective."""
    objective = report["objective_metric"]
    table = Table(title=f"Lift against the holdout ({METRIC_LABEL[objective]} per segment)")
    for name in ("segment", "metric", "sends control / bandit", "control", "bandit", "absolute lift (95% CI)",
                 "relative lift (95% CI)", "P(lift > 0)"):
        table.add_column(name, justify="left" if name in ("segment", "metric") else "right")

    def row(label: str, block: dict, metric: str, end_section: bool = False) -> None:
        lf = block["lift"][metric]
        rel = "–" if lf["relative_lift"] is None else (
            f"{lf['relative_lift']:+.1%} ({_ci(lf['relative_lift_ci95'], lambda v: f'{v:+.1%}')})")
        absolute = "–" if lf["absolute_lift"] is None else (
            f"{_num(lf['absolute_lift'], metric)} ({_ci(lf['absolute_lift_ci95'], lambda v: _num(v, metric))})")
        table.add_row(label, METRIC_LABEL[metric], f"{block['control']['sends']:,} / {block['bandit']['sends']:,}",
                      _num(lf["control"], metric), _num(lf["bandit"], metric), absolute, rel,
                      _pct(lf["prob_lift_positive"], 0), end_section=end_section)

    metrics = list(report["overall"]["lift"])
    for i, metric in enumerate(metrics):
        row("all segments", report["overall"], metric, end_section=i == len(metrics) - 1 and "profit" not in report)
    if "profit" in report:  # the profit objective: its profit lift (campaigns/services/report_profit.py)
        p = report["profit"]["overall"]
        row("all segments", {**p, "lift": {"profit_per_send": p["lift"]}}, "profit_per_send", end_section=True)
    for seg in report["segments"]:
        row(seg["segment"], seg, objective)
    return table


def report_cmd(
    campaign_id: Annotated[int, typer.Argument(help="The campaign's id (`mab campaigns` lists them)")],
    html: Annotated[Path | None, typer.Option("--html", help="Also write the HTML report (with charts) here")] = None,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Also write the report as tidy CSV here")] = None,
    pdf: Annotated[Path | None, typer.Option("--pdf", help="Also print the HTML report to a PDF here (needs Chromium "
                                             "installed: headless, no network)")] = None,
    open_: Annotated[bool, typer.Option("--open", help="Write the HTML report (to --html, or under var/reports/) "
                                        "and open it in the browser")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Compute the report now rather than show the stored one "
                                        "when newer data has arrived since")] = False,
) -> None:
    """Show a campaign's lift report: the lift table in the terminal, and the same report as HTML or CSV files."""
    from campaigns.errors import DomainError
    from campaigns.services import report_store, reports
    from campaigns.settings import get_settings

    try:
        report = report_store.read(campaign_id, fresh).as_dict()
    except DomainError as exc:
        console.print(f"[red]error:[/] {exc.detail}")
        raise typer.Exit(1) from None
    health = report["health"]
    console.print(f"[bold]{report['name']}[/] (campaign {campaign_id}, {report['status']}): "
                  f"{report['periods']} period(s), objective {report['objective']}, "
                  f"holdout {report['holdout_share']:.0%}")
    console.print(lift_table(report))
    if report["freshness"]["state"] == "behind":
        console.print(f"[yellow]{report['freshness']['detail']}[/] (--fresh computes it now)")
    console.print(f"events applied {report['events']['applied']:,}, unattributed {report['events']['unattributed']:,}; "
                  f"sample-ratio mismatches flagged: {health['srm_flagged']}")
    if open_ and html is None:
        html = get_settings().var_dir / "reports" / f"campaign-{campaign_id}.html"
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(reports.render_html(report), encoding="utf-8")
        console.print(f"HTML report: {html}")
    if csv_file is not None:
        csv_file.parent.mkdir(parents=True, exist_ok=True)
        with csv_file.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(reports.CSV_COLUMNS)
            writer.writerows(reports.csv_rows(report))
        console.print(f"CSV report: {csv_file}")
    if pdf is not None:
        from campaigns.services import report_pdf

        try:
            data = report_pdf.html_to_pdf(reports.render_html(report))
        except DomainError as exc:
            console.print(f"[red]error:[/] no PDF: {exc.detail}")
            raise typer.Exit(1) from None
        pdf.parent.mkdir(parents=True, exist_ok=True)
        pdf.write_bytes(data)
        console.print(f"PDF report: {pdf} ({len(data) / 1e3:,.0f} kB)")
    if open_ and not webbrowser.open(html.resolve().as_uri()):
        console.print(f"no browser found here: open {html.resolve()} yourself")


def manual_config() -> Path | None:
    """mkdocs.yml of a source checkout (the manual is not part of the installed package)."""
    for folder in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (folder / "mkdocs.yml").is_file():
            return folder / "mkdocs.yml"
    return None


def docs_cmd(
    port: Annotated[int, typer.Option(help="Port of the manual's local web server")] = 8001,
    build: Annotated[Path | None, typer.Option(help="Build the static site into this folder, not serve it")] = None,
) -> None:
    """Serve the manual (docs/, built with MkDocs) at http://127.0.0.1:PORT, or build it as static files."""
    config = manual_config()
    if config is None:
        console.print("[red]error:[/] no mkdocs.yml here: run `mab docs` in the source checkout")
        raise typer.Exit(1)
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        console.print("[red]error:[/] MkDocs is not installed: pip install -e '.[dev]'")
        raise typer.Exit(1) from None
    if build is not None:
        cmd = ["build", "--strict", "-f", str(config), "-d", str(build.resolve())]
    else:
        console.print(f"the manual: http://127.0.0.1:{port}/ (Ctrl-C stops it)")
        cmd = ["serve", "-f", str(config), "-a", f"127.0.0.1:{port}"]
    raise typer.Exit(subprocess.call([sys.executable, "-m", "mkdocs", *cmd]))
