"""Amazon SES notifications through SNS (`POST /webhooks/esp/ses`), verified as SNS signs them.

SNS signs the canonical string of a message's fields ("Key\\nvalue\\n" for Message, MessageId,
Subject if present, SubscribeURL and Token for (un)subscription confirmations, Timestamp, TopicArn,
Type) with RSA: SHA1 for SignatureVersion 1, SHA256 for 2. The certificate is fetched from
SigningCertURL, which must be https on `sns.<region>.amazonaws.com` (else 401), once per URL: kept in
memory and, with MAB_SNS_CERTIFICATE_DIR, on disk — where an operator can also put the certificates
of a host that cannot reach AWS. Only the topics of MAB_SES_TOPIC_ARNS are accepted: a valid SNS
signature proves the message came from SNS, not from our topic. A bad signature is a 401 and records
nothing.

A SubscriptionConfirmation is not confirmed blindly: it is logged and answered with its
SubscribeURL, which the operator opens once (the operator's guide says how). A Notification's
Message is SES's JSON: Bounce (Permanent: hard; Transient or Undetermined: soft), Complaint, or
Delivery, for each of its recipients; matched by our Message-ID when SES reports it, else by address.
"""

import base64
import hashlib
import json
import logging
import re
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlmodel import Session

from campaigns.errors import InvalidInput, Unauthorized, Unavailable
from campaigns.services import esp_webhooks
from campaigns.settings import get_settings

log = logging.getLogger(__name__)

CERT_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
SUBSCRIPTION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
FETCH_TIMEOUT = 5.0
_certificates: dict[str, rsa.RSAPublicKey] = {}


def canonical(message: dict) -> bytes:
    keys = NOTIFICATION_KEYS if message.get("Type") == "Notification" else SUBSCRIPTION_KEYS
    return "".join(f"{k}\n{message[k]}\n" for k in keys if message.get(k) is not None).encode()


def _certificate_url(url) -> str:
    parts = urlsplit(url if isinstance(url, str) else "")
    if parts.scheme != "https" or not CERT_HOST.match(parts.hostname or "") or not parts.path.endswith(".pem"):
        raise Unauthorized("SigningCertURL must be an https .pem URL on sns.<region>.amazonaws.com")
    return url


def public_key(url: str) -> rsa.RSAPublicKey:
    """The RSA key of the certificate at `url`: from memory, MAB_SNS_CERTIFICATE_DIR, or fetched."""
    if url in _certificates:
        return _certificates[url]
    folder = get_settings().sns_certificate_dir
    cached = folder / (hashlib.sha256(url.encode()).hexdigest() + ".pem") if folder else None
    if cached is not None and cached.is_file():
        pem = cached.read_bytes()
    else:
        try:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as r:  # noqa: S310 (https, checked host)
                pem = r.read(100_000)
        except OSError as exc:
            raise Unavailable(f"could not fetch the SNS signing certificate {url}: {exc}") from None
        if cached is not None:
            Path(cached).parent.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(pem)
    key = x509.load_pem_x509_certificate(pem).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Unauthorized("the SNS signing certificate does not hold an RSA key")
    _certificates[url] = key
    return key


def verify(message: dict) -> None:
    topics = [t.strip() for t in get_settings().ses_topic_arns.split(",") if t.strip()]
    if not topics:
        raise Unavailable("the SES webhook is not configured (set MAB_SES_TOPIC_ARNS)")
    if message.get("TopicArn") not in topics:
        raise Unauthorized(f"topic {message.get('TopicArn')!r} is not one of MAB_SES_TOPIC_ARNS")
    digest = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(str(message.get("SignatureVersion")))  # noqa: S303
    if digest is None:
        raise Unauthorized("SignatureVersion must be 1 or 2")
    try:
        signature = base64.b64decode(str(message.get("Signature") or ""), validate=True)
    except ValueError:
        raise Unauthorized("Signature is not base64") from None
    key = public_key(_certificate_url(message.get("SigningCertURL")))
    try:
        key.verify(signature, canonical(message), padding.PKCS1v15(), digest)
    except InvalidSignature:
        raise Unauthorized("bad signature") from None


def receive(session: Session, body: bytes) -> list[str]:
    try:
        message = json.loads(body)
    except ValueError:
        raise Unauthorized("the body is not an SNS message: no signature to check") from None
    if not isinstance(message, dict):
        raise Unauthorized("the body is not an SNS message: no signature to check")
    verify(message)
    kind = message.get("Type")
    if kind == "SubscriptionConfirmation":
        log.warning("SNS subscription of topic %s waits for confirmation: open %s", message.get("TopicArn"),
                    message.get("SubscribeURL"))
        return [f"subscription confirmation: open {message.get('SubscribeURL')} once to confirm it"]
    if kind != "Notification":
        esp_webhooks.metrics.count_inbound("ignored")
        return [f"ignored: {kind}"]
    try:
        notification = json.loads(message.get("Message") or "")
    except ValueError:
        notification = None
    return esp_webhooks.each_event([notification], lambda n: _record(session, n))


def _message_id(mail: dict) -> str | None:
    found = (mail.get("commonHeaders") or {}).get("messageId")
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
            found = header.get("value")
    return found if isinstance(found, str) else None


def _record(session: Session, n) -> str | list[str]:
    if not isinstance(n, dict) or not isinstance(n.get("notificationType") or n.get("eventType"), str):
        raise InvalidInput("Message", "an SES notification is JSON naming its notificationType or eventType")
    kind = n.get("notificationType") or n.get("eventType")
    mail = n.get("mail") if isinstance(n.get("mail"), dict) else {}
    if kind == "Bounce":
        bounce = n.get("bounce") or {}
        hard = bounce.get("bounceType") == "Permanent"
        recipients = [(r.get("emailAddress"), f"{r.get('status') or ''} {r.get('diagnosticCode') or ''}".strip())
                      for r in bounce.get("bouncedRecipients") or [] if isinstance(r, dict)]
        what = "hard" if hard else "soft"
    elif kind == "Complaint":
        recipients = [(r.get("emailAddress"), "complaint") for r in (n.get("complaint") or {}).get(
            "complainedRecipients") or [] if isinstance(r, dict)]
        what = "complaint"
    elif kind == "Delivery":
        recipients, what = [(None, "delivered")], "delivered"
    else:
        esp_webhooks.metrics.count_inbound("ignored")
        return f"ignored: {kind}"
    if not recipients:
        raise InvalidInput("Message", f"an SES {kind} names its recipients")
    return [esp_webhooks.apply(session, what, _message_id(mail), address if isinstance(address, str) else None,
                               detail, "ses") for address, detail in recipients]
