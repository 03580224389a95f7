"""`mab`: start the service with its embedded defaults, run the demo, manage keys and the schema."""

import json
import os
import signal
import sys
import time
from typing import Annotated

import typer
from rich.console import Console

from campaigns.settings import get_settings

app = typer.Typer(help="MAB Campaigns: multi-armed bandit experimentation for email marketing.",
                  no_args_is_help=True)
console = Console()


@app.callback()
def _configure_logging() -> None:
    """Structured logs for every command; WARNING unless MAB_LOG_LEVEL says otherwise, so the
    commands' own output is not buried under migration and startup lines."""
    from campaigns.logging_config import configure_logging

    configure_logging(default_level="WARNING")


def _migrate() -> str:
    from campaigns.migrate import upgrade

    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    upgrade(url)
    return url


def _ensure_admin_key() -> tuple[str | None, bool]:
    """On first start, create an admin key and keep it in var/admin.key (0600). Returns the key
    (None when keys exist but the file is gone) and whether it was created now: only then is it shown."""
    from sqlalchemy import func, select

    from campaigns.db import session_scope
    from campaigns.models import ApiKey
    from campaigns.services import keys

    key_file = get_settings().var_dir / "admin.key"
    with session_scope() as session:
        if session.execute(select(func.count()).select_from(ApiKey)).scalar_one():
            return (key_file.read_text().strip() if key_file.exists() else None), False
        _, plaintext = keys.create_key(session, "first admin (mab up)", "admin")
    key_file.write_text(plaintext + "\n")
    key_file.chmod(0o600)
    return plaintext, True


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest migration."""
    console.print(f"migrated {_migrate()}")


@app.command("create-key")
def create_key(
    role: Annotated[str, typer.Option(help="admin, marketer, analyst or ingest")] = "admin",
    name: Annotated[str, typer.Option(help="Who or what the key is for")] = "cli",
) -> None:
    """Create an API key (the first admin key, for instance). The key is shown once."""
    from campaigns.db import session_scope
    from campaigns.models import Role
    from campaigns.services import keys

    if role not in {r.value for r in Role}:
        raise typer.BadParameter(f"role must be one of {', '.join(r.value for r in Role)}", param_hint="--role")
    _migrate()
    with session_scope() as session:
        row, plaintext = keys.create_key(session, name, role)
    console.print(f"{row.role} key #{row.id} ({row.name}):")
    print(plaintext)


@app.command()
def up(
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    host: Annotated[str, typer.Option(help="API bind address")] = "127.0.0.1",
    demo: Annotated[bool, typer.Option("--demo", help="Create the demo campaign and run a few periods")] = False,
    demo_customers: Annotated[int, typer.Option(help="Customers in the demo audience")] = 16_000,
    demo_periods: Annotated[int, typer.Option(help="Send periods the demo drives")] = 4,
    concurrency: Annotated[int, typer.Option(help="Celery worker processes")] = 2,
) -> None:
    """Start everything: SQLite under ./var, a private redis-server (unless MAB_REDIS_URL is set),
    a Celery worker and beat, and the API. Ctrl-C stops all of it."""
    from campaigns.stack import Stack

    settings = get_settings()
    (settings.var_dir / "logs").mkdir(parents=True, exist_ok=True)
    url = _migrate()
    stack = Stack(var_dir=settings.var_dir, say=lambda line: console.print(f"[yellow]{line}[/]"))
    stop = {"now": False}

    def request_stop(*_):
        stop["now"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)  # also when started in the background, where SIGINT is ignored
    try:
        redis_url = settings.redis_url or stack.start_redis()
        api_url = f"http://{host}:{port}"
        stack.env.update(
            MAB_REDIS_URL=redis_url,
            MAB_DATABASE_URL=url,
            MAB_PUBLIC_BASE_URL=os.environ.get("MAB_PUBLIC_BASE_URL", api_url),
        )
        os.environ.update(MAB_REDIS_URL=redis_url, MAB_DATABASE_URL=url)
        stack.start_services(host, port, concurrency)
        stack.record(database_url=url, redis_url=redis_url, api_url=api_url)
        admin_key, created = _ensure_admin_key()
        console.print(f"[bold green]MAB Campaigns is up[/] at {api_url} (docs: /docs)")
        console.print(f"database {url}\nbroker   {redis_url}\nlogs     {settings.var_dir / 'logs'}/")
        key_file = settings.var_dir / "admin.key"
        if created:
            console.print(f"admin key (shown once; kept in {key_file}): {admin_key}")
        elif admin_key:
            console.print(f"admin key: in {key_file}")
        else:
            console.print(f"[yellow]no {key_file}:[/] create an admin key with `mab create-key --role admin`")
        if demo:
            from campaigns.demo import Demo

            if not admin_key:
                raise RuntimeError(f"the demo needs the admin key in {settings.var_dir / 'admin.key'}")
            Demo(api_url, admin_key, console).run(demo_customers, demo_periods)
        console.print("Running. Press Ctrl-C to stop.")
        while True:
            stack.supervise()  # a process that died is restarted; only Ctrl-C stops the service
            time.sleep(1)
    except KeyboardInterrupt:
        console.print("stopping…")
    except RuntimeError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    finally:
        stack.stop()
        console.print("stopped.")


@app.command("demo")
def demo_cmd(
    url: Annotated[str, typer.Option(help="Base URL of a running service")] = "http://127.0.0.1:8000",
    api_key: Annotated[str, typer.Option(envvar="MAB_API_KEY", help="An admin key")] = "",
    customers: Annotated[int, typer.Option(help="Customers in the demo audience")] = 16_000,
    periods: Annotated[int, typer.Option(help="Send periods to drive")] = 4,
) -> None:
    """Drive the demo campaign against a running service (`mab up` in another terminal)."""
    from campaigns.demo import Demo

    key = api_key or (get_settings().var_dir / "admin.key").read_text().strip()
    Demo(url, key, console).run(customers, periods)


@app.command()
def send(
    campaign_id: Annotated[int, typer.Argument(help="The campaign to send a period of")],
    wait: Annotated[bool, typer.Option(help="Follow the period with a progress bar until it is done")] = True,
    poll: Annotated[float, typer.Option(help="Seconds between progress updates")] = 1.0,
) -> None:
    """Start the campaign's next send period now (workers do the sending) and show its progress.

    Beside a running `mab up` in the same folder it uses that stack's database and broker; elsewhere
    MAB_DATABASE_URL and MAB_REDIS_URL, like the workers. Ctrl-C stops watching, not sending."""
    from campaigns import jobs
    from campaigns.db import session_scope
    from campaigns.errors import DomainError
    from campaigns.services import periods

    unreachable = jobs.broker_reachable()
    if unreachable:  # checked before anything is written: a period nobody can send would block the next
        console.print(f"[red]error:[/] {unreachable}: start `mab up` in this folder, or set MAB_REDIS_URL "
                      "to the workers' broker")
        raise typer.Exit(1)
    try:
        with session_scope() as session:
            period = periods.start_period(session, campaign_id)
            period_id, number = period.id, period.number
    except DomainError as exc:
        console.print(f"[red]error:[/] {exc.detail}")
        raise typer.Exit(1) from None
    console.print(f"campaign {campaign_id}: period {number} started (id {period_id})")
    if not wait:
        return
    p = _follow_period(period_id, number, poll)
    if p["state"] == "waiting":  # between two waves: beat (`mab up`, or the deployment's) sends the next
        console.print(f"period {number}: {p['sent']:,} sent, {p['failed']:,} failed so far — {p['state_reason']}; "
                      f"the workers send it then (follow with `mab campaigns` or GET /campaigns/{campaign_id}/periods/{number})")
        return
    console.print(f"period {number} {p['status']}: {p['sent']:,} sent, {p['failed']:,} failed of {p['total']:,}"
                  + (f" — {p['error']}" if p["error"] else "")
                  + (f" — {p['state_reason']}" if p["state"] == "waiting" else ""))
    for f in p["failures"][:5]:
        console.print(f"  {f['count']:,} × {f['reason']} (e.g. {', '.join(f['examples'])})")
    if p["status"] == "failed" or p["state"] == "paused":
        raise typer.Exit(1)


def _follow_period(period_id: int, number: int, poll: float) -> dict:
    """A progress bar with the recent rate and ETA until the period completes, fails, pauses or waits
    for its next wave; a stalled period says since when and why."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from campaigns.db import session_scope
    from campaigns.repositories import campaigns as repo
    from campaigns.services import periods

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[note]}"), TimeRemainingColumn()]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(f"period {number}", total=None, note="")
        while True:
            with session_scope() as session:
                p = periods.public(session, repo.get_period(session, period_id))
            note = f"{p['rate_per_second']:,.0f}/s" if p["rate_per_second"] else ""
            note += f", {p['failed']:,} failed" if p["failed"] else ""
            if p["state"] == "stalled":
                note = f"[yellow]stalled since {p['stalled_since']:%H:%M:%S}: {p['state_reason']}[/]"
            if p["state"] == "waiting":  # the rest leaves when its send windows open: the workers send it
                note = p["state_reason"]
            bar.update(task, total=p["total"] or None, completed=p["sent"] + p["failed"], note=note)
            if p["status"] in ("completed", "failed") or p["state"] in ("paused", "waiting"):
                return p
            time.sleep(poll)


def _simulate_command() -> None:
    from campaigns.simulate_cli import simulate

    app.command("simulate")(simulate)


_simulate_command()


def _reading_commands() -> None:
    from campaigns import reading_cli

    app.command("campaigns")(reading_cli.campaigns_cmd)
    app.command("report")(reading_cli.report_cmd)
    app.command("docs")(reading_cli.docs_cmd)


_reading_commands()


@app.command("config-reference")
def config_reference(
    output: Annotated[str, typer.Option(help="Where to write it (default: docs/reference/configuration.md)")] = "",
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 if the file is out of date")] = False,
) -> None:
    """Generate the configuration reference (every MAB_* variable) from the settings object."""
    from pathlib import Path

    from campaigns import config_reference as reference

    path = Path(output) if output else reference.DOCUMENT
    if check:
        if not reference.is_current(path):
            console.print(f"[red]{path} is out of date with campaigns/settings.py:[/] run `mab config-reference`")
            raise typer.Exit(1)
        console.print(f"{path} is up to date")
        return
    reference.write(path)
    console.print(f"wrote {path} ({len(reference.rows())} settings)")
    missing = reference.undocumented()
    if missing:
        console.print(f"[yellow]no description in campaigns/settings.py:[/] {', '.join(missing)}")


@app.command("unsubscribe-mail")
def unsubscribe_mail(
    files: Annotated[list[str] | None, typer.Argument(help="Raw messages (.eml); none: one message on stdin")] = None,
) -> None:
    """Process inbound mail sent to the List-Unsubscribe mailto: address (e.g. from a Postfix pipe
    transport, or a drained mailbox). A genuine token in the subject unsubscribes its customer."""
    from pathlib import Path

    from campaigns.db import session_scope
    from campaigns.services import inbound

    messages = [(name, Path(name).read_bytes()) for name in files] if files else [("stdin", sys.stdin.buffer.read())]
    for name, raw in messages:
        with session_scope() as session:  # one message, one commit: a bad one never holds back the rest
            typer.echo(f"{name}: {inbound.process_message(session, raw)}")  # one plain line each


@app.command("inbound")
def inbound_reports(
    files: Annotated[list[str] | None, typer.Argument(help="Raw messages (.eml); none: one message on stdin")] = None,
    maildir: Annotated[str | None, typer.Option(help="Process a Maildir's new/ messages instead, moving each "
                                                     "to cur/ (what beat does with MAB_INBOUND_MAILDIR)")] = None,
) -> None:
    """Process bounce (RFC 3464 DSN) and complaint (RFC 5965 ARF) reports that arrive by mail, e.g. from
    a Postfix pipe transport on the bounce address. Hard bounces and complaints suppress the customer;
    reports that cannot be parsed or matched are kept under MAB_INBOUND_DIR and counted."""
    from pathlib import Path

    from campaigns.db import session_scope
    from campaigns.services import feedback_mail, mailbox

    if maildir:
        typer.echo(json.dumps(mailbox.poll_maildir(Path(maildir)), sort_keys=True))
        return
    messages = [(name, Path(name).read_bytes()) for name in files] if files else [("stdin", sys.stdin.buffer.read())]
    for name, raw in messages:
        with session_scope() as session:  # one message, one commit: a bad one never holds back the rest
            typer.echo(f"{name}: {feedback_mail.process_report(session, raw)}")


@app.command("check-domain")
def check_domain() -> None:
    """Print the DNS records (DKIM, SPF, DMARC) to publish for the configured sending domain."""
    from campaigns import dkim_signing

    settings = get_settings()
    try:
        records = dkim_signing.dns_records(settings)
    except dkim_signing.DkimConfigError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    if not dkim_signing.parse_keys(settings.dkim_keys):
        typer.echo("DKIM: no key configured (MAB_DKIM_KEYS): messages leave unsigned; receivers that require "
                   "DKIM (Gmail, Yahoo: bulk senders) will refuse or junk them.")
    for name, value, why in records:
        typer.echo(f"; {why}")
        # TXT strings are at most 255 characters each (RFC 4408 3.1.3): a 2048-bit key needs two
        chunks = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
        typer.echo(f"{name}. IN TXT {chunks}")


@app.command("check-email")
def check_email(
    campaign_id: Annotated[int, typer.Argument(help="The campaign whose emails to score")],
    samples: Annotated[int, typer.Option(help="Emails to build: the baseline and variants across the grid")] = 5,
) -> None:
    """Score a campaign's emails, built as they are sent (List-Id, DKIM), with SpamAssassin's local rules
    (no network tests). Exit 1 if any scores above 0, or if SpamAssassin is not installed."""
    from campaigns import spam_check
    from campaigns.db import session_scope
    from campaigns.errors import DomainError

    if not spam_check.available():
        console.print("[red]spamassassin is not installed[/] (Debian: apt-get install spamassassin)")
        raise typer.Exit(1)
    try:
        with session_scope() as session:
            messages = spam_check.campaign_messages(session, campaign_id, get_settings(), samples)
    except DomainError as exc:
        console.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(1) from None
    scores = [spam_check.score(raw, label) for label, raw in messages]
    for s in scores:
        typer.echo(f"{s.score:5.1f}  {'ok  ' if s.passed else 'HIGH'}  {s.label}: {', '.join(s.rules) or 'no rule'}")
    worst = max(s.score for s in scores)
    typer.echo(f"worst score {worst:.1f} (required: <= {spam_check.THRESHOLD:.1f}; SpamAssassin calls 5.0 spam)")
    if worst > spam_check.THRESHOLD:
        raise typer.Exit(1)


@app.command("revoke-key")
def revoke_key(
    key_id: Annotated[int, typer.Argument(help="The key's id (`GET /api-keys`, or printed by create-key)")],
) -> None:
    """Revoke an API key: every later request with it gets 401. Rotation: create the new key, switch
    the client over, then revoke the old one. Recorded in the audit log (as an operator's command)."""
    from campaigns.db import session_scope
    from campaigns.errors import DomainError
    from campaigns.services import audit, keys

    _migrate()
    try:
        with session_scope() as session:
            row = keys.revoke_key(session, key_id)
            audit.record_operator(session, "CLI mab revoke-key", "api_key", row.id, {"name": row.name})
    except DomainError as exc:
        console.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(1) from None
    console.print(f"{row.role} key #{row.id} ({row.name}) revoked at {row.revoked_at.isoformat()}")


outbox_app = typer.Typer(help="The outbox of .eml files (delivery backend `outbox`).", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")


@outbox_app.command("prune")
def outbox_prune(
    older_than: Annotated[float | None, typer.Option(
        "--older-than", metavar="DAYS", help="Delete emails older than this (default: MAB_OUTBOX_RETENTION_DAYS)",
    )] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing")] = False,
) -> None:
    """Delete outbox emails (.eml) last written more than DAYS ago, and the folders that leaves
    empty. Beat does the same hourly with MAB_OUTBOX_RETENTION_DAYS."""
    from campaigns.services import retention

    settings = get_settings()
    days = settings.outbox_retention_days if older_than is None else older_than
    if older_than is None and days == 0:
        console.print("MAB_OUTBOX_RETENTION_DAYS is 0 (keep forever): give --older-than DAYS to prune anyway")
        raise typer.Exit(1)
    if days < 0:
        raise typer.BadParameter("must be 0 or more days", param_hint="--older-than")
    result = retention.prune_outbox(settings.outbox_dir, days, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    console.print(f"{verb} {result.files:,} files ({result.bytes / 1e6:,.1f} MB) older than {days:g} days "
                  f"from {settings.outbox_dir}/")


campaign_app = typer.Typer(help="Campaigns as files: create or update a draft from YAML, preview an email.",
                           no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")


@campaign_app.command("apply")
def campaign_apply(
    path: Annotated[str, typer.Argument(help="A YAML (or JSON) file with the fields of POST /campaigns")],
) -> None:
    """Create a draft from the file, or update the draft named by its `id:` field. Refused, naming
    the field, when the file is invalid; nothing is written then. Recorded in the audit log."""
    from campaigns import campaign_files
    from campaigns.db import session_scope
    from campaigns.errors import DomainError

    _migrate()
    try:
        with session_scope() as session:
            campaign, created = campaign_files.apply(session, campaign_files.load(path))
            cid, status = campaign.id, campaign.status
    except DomainError as exc:
        for problem in exc.detail if isinstance(exc.detail, list) else [{"loc": "", "msg": exc.detail}]:
            console.print(f"[red]{path}: {problem['loc']}:[/] {problem['msg']}" if problem["loc"]
                          else f"[red]{path}:[/] {problem['msg']}")
        raise typer.Exit(1) from None
    if created:
        console.print(f"created draft campaign {cid} from {path}; add `id: {cid}` to the file to update it")
    else:
        console.print(f"updated campaign {cid} ({status}) from {path}")


@campaign_app.command("preview")
def campaign_preview(
    campaign_id: Annotated[int, typer.Argument(help="The campaign")],
    customer: Annotated[str, typer.Option(help="The customer's external id")],
    variant: Annotated[str, typer.Option(help="An arm number, control, or factor:level,factor:level")] = "0",
    html: Annotated[bool, typer.Option(help="Print the HTML part instead of the text part")] = False,
) -> None:
    """Print the email the customer would receive for the variant: headers, then the text (or HTML)."""
    from campaigns.db import session_scope
    from campaigns.errors import DomainError
    from campaigns.services import preview

    _migrate()
    try:
        with session_scope() as session:
            result = preview.preview(session, campaign_id, customer, preview.parse_variant(variant))
    except DomainError as exc:
        detail = exc.detail if isinstance(exc.detail, str) else "; ".join(f"{d['loc']}: {d['msg']}" for d in exc.detail)
        console.print(f"[red]error:[/] {detail}")
        raise typer.Exit(1) from None
    for name, value in result["headers"].items():
        print(f"{name}: {value}")
    print(f"X-Variant: {result['variant']['key']} (arm {result['variant']['arm']})")
    print()
    print(result["html"] if html else result["text"])


if __name__ == "__main__":
    sys.exit(app())
