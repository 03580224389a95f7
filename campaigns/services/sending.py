"""Delivering one chunk of a period: lease it, render and deliver its queued sends in small
committed batches, give it back when the campaign is paused, close the period with the last chunk.

Exactly once: every send was claimed in the ledger (unique per period and customer) before any
email leaves; only `queued` rows are delivered and each batch's outcome commits before the next
batch starts, so a retried chunk skips what it already sent. A hard crash can redeliver at most
the batch in flight: with the outbox backend that rewrites the same file (named by send id); with
SMTP it is at most `MAB_SMTP_COMMIT_EVERY` messages, which carry the same Message-ID as before.
"""

import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from datetime import timedelta
from functools import lru_cache

from campaigns import attributes, dkim_signing, metrics, pacing, signing, verp
from campaigns.db import on_commit, session_scope
from campaigns.delivery import DeliveryError, make_backend
from campaigns.models import CampaignStatus, ChunkStatus, PeriodStatus, SendStatus, utcnow
from campaigns.rendering import CompiledCampaign, MessageWriter, list_id, rewrite_links
from campaigns.repositories import campaigns as repo
from campaigns.repositories import chunks as chunk_repo
from campaigns.repositories import sends as send_repo
from campaigns.services import bounces, period_health, periods, send_windows
from campaigns.settings import get_settings

log = logging.getLogger(__name__)

HOLDOUT = periods.HOLDOUT
HELD = "held by another worker"
MAX_PASSES = 12  # passes over a chunk while domain groups are paced or backing off


class RenderLimitExceeded(Exception):
    pass


@lru_cache
def _namespace() -> str:
    """This host and PID namespace: where a holder's process id means something."""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = "?"
    return f"{socket.gethostname()}/{pid_ns}"


def holder_id() -> str:
    """Who holds a chunk's lease: this process, named so that a worker beside it can tell it died."""
    return f"{_namespace()}:{os.getpid()}"


def dead_local_holder(holder: str | None) -> str | None:
    """`holder` when it is a process of this host and PID namespace that no longer exists (a worker
    child killed mid-chunk): its lease need not run out before another process takes over."""
    if not holder:
        return None
    where, _, pid = holder.rpartition(":")
    if where != _namespace() or not pid.isdigit() or int(pid) == os.getpid():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return holder
    except OSError:  # it exists, under another user
        return None
    return None


def _on_alarm(signum, frame):
    raise RenderLimitExceeded("rendering took longer than MAB_RENDER_TIMEOUT_SECONDS")


_alarm_installed = False
_MAIN_THREAD_ID = threading.main_thread().ident
setitimer, ITIMER_REAL = signal.setitimer, signal.ITIMER_REAL


def render_limited(render, timeout: float, *args):
    """Run `render(*args)` under a wall-clock cap. The cap needs SIGALRM, i.e. the main thread (where
    Celery's prefork workers run tasks); elsewhere the sandbox's own limits still apply. The handler
    is installed once per process; each message only arms and disarms the timer (a hot path)."""
    global _alarm_installed
    if threading.get_ident() != _MAIN_THREAD_ID:
        return render(*args)
    if not _alarm_installed:
        signal.signal(signal.SIGALRM, _on_alarm)
        _alarm_installed = True
    setitimer(ITIMER_REAL, timeout)
    try:
        return render(*args)
    finally:
        setitimer(ITIMER_REAL, 0)


class ChunkContext:
    """What every send of a chunk shares: compiled templates, variant levels, addresses."""

    def __init__(self, session, period, campaign):
        settings = get_settings()
        self.settings = settings
        self.compiled = CompiledCampaign.compile(
            campaign.name,
            {"subject": campaign.subject_template, "html": campaign.html_template, "text": campaign.text_template},
        )
        self.params = {v.arm: v.params for v in repo.variants(session, campaign.id)}
        self.params[HOLDOUT] = campaign.baseline
        self.base = settings.public_base_url.rstrip("/")
        self.domain = settings.mail_from.rsplit("@", 1)[-1].rstrip(">") or "localhost"
        self.mailto = settings.unsubscribe_mailto or f"unsubscribe@{self.domain}"
        self.outbox = f"campaign-{campaign.id}/period-{period.number}"
        # literal links of the template -> their number in tracking tokens (0 is landing_url)
        self.links = {url: i + 1 for i, url in enumerate(campaign.links)}
        self.period_seed = period.seed
        self.campaign_id = campaign.id
        # headers and MIME skeleton once; the DKIM keys once per process (campaigns/dkim_signing.py)
        self.writer = MessageWriter(settings.mail_from, self.domain, list_id(campaign.id, campaign.name, self.domain),
                                    dkim_signing.signer_for(settings))
        self.render_timeout = settings.render_timeout_seconds
        self.max_bytes = settings.max_message_bytes
        self.sent = 0  # by this task, for its log line
        self.pacer: pacing.Pacer | None = None  # SMTP only (deliver_chunk)
        self.held: dict[str, float] = {}  # domain group -> seconds until it may send: its rows stay queued
        self.deferrals: Counter = Counter()  # domain group -> deferrals met by this task, for its log line
        self.row_deferrals: Counter = Counter()  # send id -> deferrals, over the passes of this task

    def email_for(self, row):
        unsub_token = signing.sign("unsub", row.id)
        unsubscribe_url = f"{self.base}/u/{unsub_token}"
        landing_url = f"{self.base}/t/{signing.sign_click(0, row.id, self.campaign_id)}"
        customer = {"external_id": row.external_id, "email": row.email,
                    **attributes.template_values(row.attributes or {})}
        subject, html, text = render_limited(
            self.compiled.render, self.render_timeout, self.params[row.arm], customer, landing_url, unsubscribe_url)
        html = rewrite_links(html, self.links,
                             lambda i: f"{self.base}/t/{signing.sign_click(i, row.id, self.campaign_id)}")
        msg = self.writer.build(
            to=row.email, subject=subject, html=html, text=text,
            # the mailto carries the signed token back in its subject (campaigns/services/inbound.py)
            unsubscribe_url=unsubscribe_url, unsubscribe_mailto=f"{self.mailto}?subject={unsub_token}",
            # the same send always carries the same Message-ID, so a redelivery is recognisable
            message_id=f"<send-{row.id}.{self.period_seed}@{self.domain}>",
            envelope_sender=verp.envelope_sender(row.id),  # campaigns/verp.py: None when VERP is off
        )
        if len(msg.raw) > self.max_bytes:
            raise RenderLimitExceeded(f"message is {len(msg.raw)} bytes (cap {self.max_bytes})")
        return msg


class RateLimiter:
    """At most `rate` messages per second from this worker (0: unlimited)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_at = time.monotonic()

    def wait(self) -> None:
        if self.interval:
            now = time.monotonic()
            if self.next_at > now:
                time.sleep(self.next_at - now)
            self.next_at = max(self.next_at, now) + self.interval


def _deliver_with_retries(backend, send_id, msg, attempts: int, pacer=None) -> None:
    """Temporary failures (4xx, a dropped connection) are retried with a short backoff. When they
    persist: a lost connection propagates, so the task retries the chunk later; a server that keeps
    deferring this one message (a full mailbox) makes it a recorded failure of this send alone, so
    one recipient never holds back everyone queued behind it."""
    for attempt in range(1, attempts + 1):
        try:
            backend.deliver(send_id, msg)
            return
        except DeliveryError as exc:
            if exc.permanent or (attempt == attempts and exc.connection_lost):
                raise
            if pacer is not None and pacing.is_deferral(exc):
                raise  # the provider throttles: back the whole domain group off (_deliver_rows)
            if attempt == attempts:
                raise DeliveryError(f"deferred {attempts} times: {exc}", permanent=True, code=exc.code,
                                    deferred=True) from exc
            time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))


def _deliver_rows(ctx: ChunkContext, rows, backend, limiter) -> list[dict]:
    results = []
    for row in rows:
        result = {"sid": row.id, "new_status": SendStatus.FAILED, "mid": None, "at": None, "err": None,
                  "xid": row.external_id}
        results.append(result)
        if row.status != "active":  # suppression is re-checked at send time
            result["err"] = f"suppressed: customer is {row.status}"
            continue
        try:
            msg = ctx.email_for(row)
        except Exception as exc:  # one customer's broken data fails alone, with the reason
            result["err"] = f"render failed: {type(exc).__name__}: {exc}"[:500]
            continue
        group = ctx.pacer.group(row.email) if ctx.pacer else ""
        if ctx.pacer and group in ctx.held or (ctx.pacer and _hold(ctx, group, backend)):
            results.pop()  # left queued: a later pass over the chunk delivers it (deliver_chunk)
            continue
        limiter.wait()
        try:
            _deliver_with_retries(backend, row.id, msg, ctx.settings.smtp_max_attempts, ctx.pacer)
        except DeliveryError as exc:
            if ctx.pacer and pacing.is_deferral(exc):
                ctx.held[group] = ctx.pacer.deferred(group, str(exc))
                ctx.deferrals[group] += 1
                ctx.row_deferrals[row.id] += 1
                if ctx.row_deferrals[row.id] < ctx.settings.smtp_max_attempts:
                    results.pop()  # stays queued for a later pass, after the group's back-off
                    continue
                # deferred on every pass: this recipient's own trouble, a failure of this send alone
                exc = DeliveryError(f"deferred {ctx.row_deferrals[row.id]} times: {exc}", permanent=True,
                                    code=exc.code, deferred=True)
            if not exc.permanent:
                # Keep what this batch already delivered, then let the task retry the rest.
                results.pop()
                raise _Interrupted(results, exc) from exc
            result["err"] = str(exc)[:500]
            result["bounce"] = bounces.smtp_bounce(exc)  # suppresses the address from the next batch on
            continue
        result.update(new_status=SendStatus.SENT, mid=msg.message_id, at=time.time())  # epoch: see record_results
    return results


def _hold(ctx: ChunkContext, group: str, backend) -> bool:
    # a connection slot first, so that a message counted against the group's rate can go at once
    wait = backend.connection_wait(group) or ctx.pacer.wait_for(group)
    if wait > 0:
        ctx.held[group] = wait
    return wait > 0


class _Interrupted(Exception):
    def __init__(self, results, cause):
        super().__init__(str(cause))
        self.results = results
        self.cause = cause


def _record(session, period_id: int, chunk_id: int, results: list[dict], lease: float) -> dict:
    """Record a batch's outcomes, the period's progress and its failures by reason; returns the
    batch's failures by reason."""
    send_repo.record_results(session, results)
    bounces.apply_smtp_bounces(session, results)
    backend = get_settings().delivery_backend
    on_commit(session, lambda: metrics.observe_send_results(results, backend))  # counted once it holds
    sent = sum(r["new_status"] == SendStatus.SENT for r in results)
    failures = period_health.summarize(results)
    if failures:  # a read-modify-write of the summary, under the row lock the progress update takes too
        period = send_repo.lock_period_failures(session, period_id)
        period.failures = period_health.merge(period.failures, failures)
    send_repo.add_progress(session, period_id, sent, len(results) - sent, time.time(), period_health.RATE_TAU_SECONDS)
    chunk_repo.progress(session, chunk_id, sent, len(results) - sent, utcnow() + timedelta(seconds=lease))
    return failures


def _log_chunk(chunk_id: int, period_id: int, campaign_id: int, tally: Counter, sent: int, outcome: str) -> None:
    """One line per chunk: what it sent, what failed and why."""
    failed = sum(tally.values())
    extra = {"campaign_id": campaign_id, "period_id": period_id, "chunk_id": chunk_id, "sent": sent,
             "failed": failed}
    if not failed:
        log.info("chunk %s: %s sent; %s", chunk_id, sent, outcome, extra=extra)
        return
    reasons = "; ".join(f"{n} × {reason}" for reason, n in tally.most_common(3))
    log.warning("chunk %s: %s sent, %s failed (%s); %s", chunk_id, sent, failed, reasons, outcome,
                extra={**extra, "reasons": dict(tally.most_common(period_health.MAX_REASONS))})


def _take(session, chunk_id: int, now, lease: float) -> bool:
    until = now + timedelta(seconds=lease)
    if chunk_repo.take_lease(session, chunk_id, now, until, holder_id()):
        return True
    dead = dead_local_holder(chunk_repo.holder_of(session, chunk_id))
    if dead and chunk_repo.take_lease(session, chunk_id, now, until, holder_id(), dead_holder=dead):
        log.warning("chunk %s: its holder %s died; taken over before its lease ran out", chunk_id, dead)
        return True
    return False


def deliver_chunk(chunk_id: int) -> str:
    """Worker entry point for one chunk. Returns what happened, for the task log."""
    settings = get_settings()
    lease = settings.chunk_lease_seconds
    with session_scope() as session:
        chunk = chunk_repo.get(session, chunk_id)
        if chunk is None or chunk.status == ChunkStatus.DONE:
            return "done already"
        if early := send_windows.not_yet(chunk.release_at, utcnow()):
            return early  # the lease is not taken: the sweeper hands the chunk out when its window opens
        if not _take(session, chunk_id, utcnow(), lease):
            return HELD
        period = repo.get_period(session, chunk.period_id)
        campaign = repo.get_campaign(session, period.campaign_id)
        if campaign.status != CampaignStatus.ACTIVE:
            chunk_repo.release(session, chunk_id)
            return f"waiting: campaign is {campaign.status}"
        ctx = ChunkContext(session, period, campaign)
        first, last, period_id, campaign_id = chunk.first_send_id, chunk.last_send_id, period.id, campaign.id

    if settings.delivery_backend == "smtp":
        ctx.pacer = pacing.Pacer(settings)
    backend = make_backend(settings, ctx.outbox, ctx.pacer)  # SMTP: one connection per capped domain group
    limiter = RateLimiter(settings.smtp_rate_per_second if settings.delivery_backend == "smtp" else 0)
    batch = settings.smtp_commit_every if settings.delivery_backend == "smtp" else settings.send_commit_every
    tally: Counter = Counter()
    outcome = "interrupted"
    try:
        outcome = _deliver_range(ctx, chunk_id, period_id, campaign_id, first, last, backend, limiter, batch,
                                 lease, tally)
        passes = 1
        while not outcome and ctx.held:
            if passes > MAX_PASSES:  # still deferred: the task retries the chunk later, rows still queued
                raise DeliveryError(f"domain groups still held after {passes} passes: {sorted(ctx.held)}",
                                    permanent=False, connection_lost=True)
            passes += 1
            # Some domain groups were over their rate or backing off: their rows are still queued.
            # Wait for the first to reopen, keeping the lease, and go over the range again (only
            # queued rows are read, so what was delivered is not sent twice).
            _wait_for_groups(chunk_id, min(ctx.held.values()), lease)
            ctx.held.clear()
            outcome = _deliver_range(ctx, chunk_id, period_id, campaign_id, first, last, backend, limiter, batch,
                                     lease, tally)
        if not outcome:
            outcome = close_chunk(chunk_id, period_id)
        return outcome
    finally:
        backend.close()
        if ctx.deferrals:
            outcome = f"{outcome}; deferred by " + ", ".join(f"{g} ×{n}" for g, n in ctx.deferrals.items())
        _log_chunk(chunk_id, period_id, campaign_id, tally, ctx.sent, outcome)


def _wait_for_groups(chunk_id: int, seconds: float, lease: float) -> None:
    """Sleep `seconds`, in slices short enough to renew the chunk's lease before it runs out."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        with session_scope() as session:
            chunk_repo.progress(session, chunk_id, 0, 0, utcnow() + timedelta(seconds=lease))
        time.sleep(min(left, max(lease / 3, 0.05)))


def _deliver_range(ctx, chunk_id, period_id, campaign_id, first, last, backend, limiter, batch, lease,
                   tally: Counter) -> str | None:
    """Deliver the chunk's queued sends batch by batch; None when the range is done, else why it
    stopped (the campaign was paused, by a person, the guard or the failure halt below)."""
    settings = ctx.settings
    cursor = first
    while cursor <= last:
        upper = min(cursor + batch - 1, last)  # a slice of the chunk's id range
        with session_scope() as session:
            status = chunk_repo.campaign_status(session, campaign_id)
            if status != CampaignStatus.ACTIVE:
                chunk_repo.release(session, chunk_id)
                return f"waiting: campaign is {status}"
            rows = send_repo.queued_batch(session, period_id, cursor, upper)
            failures = {}
            if rows:
                try:
                    results = _deliver_rows(ctx, rows, backend, limiter)
                except _Interrupted as stop:
                    _count(ctx, tally, stop.results, _record(session, period_id, chunk_id, stop.results, lease))
                    session.commit()
                    raise stop.cause from None
                failures = _record(session, period_id, chunk_id, results, lease)
                _count(ctx, tally, results, failures)
        if any(period_health.is_judged(reason) for reason in failures):
            # A halt pauses the campaign: the next batch sees it and gives the chunk back.
            periods.halt_if_systematic(period_id, settings.failure_halt_share, settings.failure_halt_min_tried)
        cursor = upper + 1
    return None


def _count(ctx, tally: Counter, results: list[dict], failures: dict) -> None:
    ctx.sent += sum(r["new_status"] == SendStatus.SENT for r in results)
    tally.update({reason: entry["count"] for reason, entry in failures.items()})


def close_chunk(chunk_id: int, period_id: int) -> str:
    """Mark the chunk done; the last one to finish completes the period once it is planned (under
    the period's row lock, so two chunks finishing together cannot both miss it, nor miss the end
    of the plan, which takes the same lock: `periods._close_plan`)."""
    with session_scope() as session:
        period = chunk_repo.lock_period(session, period_id)
        chunk_repo.mark_done(session, chunk_id)
        session.flush()
        if (period.status == PeriodStatus.RUNNING and period.planned_at is not None
                and chunk_repo.count_unfinished(session, period_id) == 0):
            periods.finish(session, period, repo.get_campaign(session, period.campaign_id))
            return "done; period completed"
    return "done"


