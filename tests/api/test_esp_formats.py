"""SendGrid, Amazon SES (through SNS) and Postmark webhooks through real HTTP, in each ESP's own payload
format and signed the way that ESP signs (ECDSA P-256; SNS's RSA over its canonical string with a
certificate; basic auth), with keys made here since the ESPs cannot be reached. A bad signature is
a 401 that records nothing; an event about no send of ours is counted as unmatched; an event that
cannot be read is said, not dropped."""

import base64
import datetime
import hashlib
import json
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from campaigns.db import session_scope
from campaigns.models import Event
from campaigns.services import esp_ses
from campaigns.settings import get_settings
from tests.api.test_esp_webhooks import sends_with_email, statuses

CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"


def events_of(kind: str) -> list[int]:
    with session_scope() as s:
        return sorted(s.execute(select(Event.send_id).where(Event.type == kind)).scalars())


@pytest.fixture
def configure(monkeypatch):
    def set_(**env):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()

    yield set_
    get_settings.cache_clear()


# --- SendGrid ---------------------------------------------------------------------------------


@pytest.fixture
def sendgrid(configure):
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    configure(MAB_SENDGRID_VERIFICATION_KEY=base64.b64encode(public).decode())
    return key


def sendgrid_post(api, key, events: list, timestamp: int | None = None, tamper: bool = False):
    body = json.dumps(events).encode()
    ts = str(timestamp or int(time.time()))
    signature = key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    if tamper:
        body = body.replace(b"bounce", b"BOUNCE", 1)
    return api(
        "POST",
        "/webhooks/esp/sendgrid",
        role=None,
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Timestamp": ts,
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        },
    )


def sg_event(send, email, event, **extra) -> dict:
    return {
        "email": email,
        "timestamp": int(time.time()),
        "event": event,
        "smtp-id": send.message_id,
        "sg_event_id": f"ev-{send.id}-{event}",
        "sg_message_id": "filter0001.1234.5678",
        **extra,
    }


def test_sendgrid_events_in_its_format(api, sendgrid):
    rows = sends_with_email(8)
    (s0, e0), (s1, e1), (s2, e2), (s3, e3), (s4, e4), (s5, e5) = rows[:6]
    r = sendgrid_post(
        api,
        sendgrid,
        [
            sg_event(s0, e0, "bounce", type="bounce", status="5.1.1", reason="550 5.1.1 no such user"),
            sg_event(s1, e1, "spamreport"),
            sg_event(s2, e2, "bounce", type="blocked", status="4.7.1", reason="try again later"),
            sg_event(s3, e3, "unsubscribe"),
            sg_event(s4, e4, "delivered", response="250 OK"),
            sg_event(s5, e5, "dropped", reason="Bounced Address"),
            {"email": "stranger@nowhere.example", "event": "bounce", "type": "bounce"},
            "not an event",
        ],
    )
    assert r.status_code == 200, r.text
    assert [o.split(":")[0] for o in r.json()["outcomes"]] == [
        "hard bounce",
        "complaint",
        "ignored",
        "unsubscribe",
        "ignored",
        "hard bounce",
        "unmatched",
        "unparseable",
    ]
    status = statuses()
    assert [status[e] for e in (e0, e1, e2, e3, e4, e5)] == [
        "bounced",
        "unsubscribed",
        "active",
        "unsubscribed",
        "active",
        "bounced",
    ]
    assert events_of("bounce") == sorted([s0.id, s5.id]) and events_of("complaint") == [s1.id]
    assert events_of("unsubscribe") == [s3.id]


def test_sendgrid_refuses_bad_signatures_stale_timestamps_and_replays(api, sendgrid):
    (s0, e0), *_ = sends_with_email(3)
    before = statuses()
    bounce = [sg_event(s0, e0, "bounce", type="bounce", status="5.1.1")]
    other = ec.generate_private_key(ec.SECP256R1())
    for r in (
        sendgrid_post(api, other, bounce),
        sendgrid_post(api, sendgrid, bounce, tamper=True),
        sendgrid_post(api, sendgrid, bounce, timestamp=int(time.time()) - 3600),
        api("POST", "/webhooks/esp/sendgrid", role=None, content=json.dumps(bounce).encode()),
    ):
        assert r.status_code == 401, r.text
    assert statuses() == before and events_of("bounce") == []
    ts = int(time.time())
    assert sendgrid_post(api, sendgrid, [sg_event(s0, e0, "delivered")], timestamp=ts).status_code == 200


# --- Amazon SES through SNS -------------------------------------------------------------------


@pytest.fixture
def sns(configure, tmp_path, monkeypatch):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path / "sns-certs"
    folder.mkdir()
    (folder / (hashlib.sha256(CERT_URL.encode()).hexdigest() + ".pem")).write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
    )
    configure(MAB_SES_TOPIC_ARNS=f"arn:aws:sns:us-east-1:1:other,{TOPIC}", MAB_SNS_CERTIFICATE_DIR=str(folder))
    monkeypatch.setattr(esp_ses, "_certificates", {})  # no certificate remembered from another test
    return key


def sns_message(
    key,
    ses: dict | None = None,
    kind: str = "Notification",
    version: str = "1",
    cert_url: str = CERT_URL,
    topic: str = TOPIC,
) -> dict:
    m = {
        "Type": kind,
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": topic,
        "Timestamp": "2026-12-04T12:00:00.000Z",
        "SignatureVersion": version,
        "SigningCertURL": cert_url,
    }
    if kind == "Notification":
        m["Message"] = json.dumps(ses)
    else:
        m.update(
            Message="You have chosen to subscribe to the topic.",
            Token="2336412f37f",  # noqa: S106 (SNS's subscription token, not a password)
            SubscribeURL="https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336412f37f",
        )
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 (SNS's SignatureVersion 1)
    m["Signature"] = base64.b64encode(key.sign(esp_ses.canonical(m), padding.PKCS1v15(), digest)).decode()
    return m


def ses_bounce(send, email, bounce_type="Permanent") -> dict:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [
                {"emailAddress": email, "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}
            ],
        },
        "mail": {
            "messageId": "0000014644fe5ef6-9a483358",
            "destination": [email],
            "commonHeaders": {"messageId": send.message_id},
        },
    }


def ses_post(api, message: dict):
    return api(
        "POST",
        "/webhooks/esp/ses",
        role=None,
        content=json.dumps(message).encode(),
        headers={"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": message["Type"]},
    )


def test_ses_notifications_through_sns(api, sns):
    (s0, e0), (s1, e1), (s2, e2), (s3, e3), *_ = sends_with_email(6)
    assert ses_post(api, sns_message(sns, ses_bounce(s0, e0))).json()["outcomes"][0].startswith("hard bounce")
    assert (
        ses_post(api, sns_message(sns, ses_bounce(s1, e1, "Transient"), version="2"))
        .json()["outcomes"][0]
        .startswith("ignored: soft")
    )
    complaint = {
        "notificationType": "Complaint",
        "mail": {"destination": [e2]},
        "complaint": {"complainedRecipients": [{"emailAddress": e2}], "complaintFeedbackType": "abuse"},
    }
    assert (
        ses_post(api, sns_message(sns, complaint)).json()["outcomes"][0].startswith("complaint")
    )  # matched by address
    delivery = {"notificationType": "Delivery", "mail": {"destination": [e3]}, "delivery": {"recipients": [e3]}}
    assert ses_post(api, sns_message(sns, delivery)).json()["outcomes"][0].startswith("ignored: delivered")
    assert ses_post(api, sns_message(sns, {"mail": {}})).json()["outcomes"][0].startswith("unparseable")
    status = statuses()
    assert [status[e] for e in (e0, e1, e2, e3)] == ["bounced", "active", "unsubscribed", "active"]
    assert events_of("bounce") == [s0.id] and events_of("complaint") == [s2.id]
    r = ses_post(api, sns_message(sns, kind="SubscriptionConfirmation"))
    assert r.status_code == 200 and "ConfirmSubscription" in r.json()["outcomes"][0]


def test_ses_refuses_what_sns_did_not_sign_for_our_topic(api, sns):
    (s0, e0), *_ = sends_with_email(3)
    before = statuses()
    good = sns_message(sns, ses_bounce(s0, e0))
    forged = {**good, "Message": json.dumps(ses_bounce(s0, "someone@else.example"))}
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for message in (
        forged,
        sns_message(other_key, ses_bounce(s0, e0)),
        sns_message(sns, ses_bounce(s0, e0), topic="arn:aws:sns:eu-west-1:999:attacker"),
        sns_message(sns, ses_bounce(s0, e0), cert_url="https://evil.example/sns.pem"),
        sns_message(sns, ses_bounce(s0, e0), cert_url=CERT_URL.replace("https", "http")),
        {**good, "SignatureVersion": "3"},
    ):
        r = ses_post(api, message)
        assert r.status_code == 401, r.text
    assert statuses() == before and events_of("bounce") == []


def test_ses_webhook_is_off_without_topics(api):
    assert api("POST", "/webhooks/esp/ses", role=None, content=b"{}").status_code == 503


# --- Postmark ---------------------------------------------------------------------------------


def postmark_post(api, event: dict, auth: str | None = "postmark:s3cret"):
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    return api("POST", "/webhooks/esp/postmark", role=None, content=json.dumps(event).encode(), headers=headers)


def test_postmark_webhooks(api, configure):
    configure(MAB_POSTMARK_WEBHOOK_AUTH="postmark:s3cret")
    (s0, e0), (s1, e1), (s2, e2), (s3, e3), *_ = sends_with_email(6)
    bounce = {
        "RecordType": "Bounce",
        "Type": "HardBounce",
        "TypeCode": 1,
        "MessageID": "883953f4-6105-42a2",
        "Email": e0,
        "Description": "The server was unable to deliver your message",
        "Details": "smtp;550 5.1.1",
    }
    before = statuses()
    for auth in (None, "postmark:wrong"):
        assert postmark_post(api, bounce, auth).status_code == 401
    assert statuses() == before
    assert postmark_post(api, bounce).json()["outcomes"][0].startswith("hard bounce")
    assert postmark_post(api, {**bounce, "Type": "SoftBounce", "Email": e1}).json()["outcomes"][0].startswith("ignored")
    complaint = {"RecordType": "SpamComplaint", "Type": "SpamComplaint", "Email": e2, "MessageID": "x"}
    assert postmark_post(api, complaint).json()["outcomes"][0].startswith("complaint")
    change = {
        "RecordType": "SubscriptionChange",
        "Recipient": e3,
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
    }
    assert postmark_post(api, change).json()["outcomes"][0].startswith("unsubscribe")
    assert postmark_post(api, {**change, "SuppressSending": False}).json()["outcomes"][0].startswith("ignored")
    assert (
        postmark_post(api, {**bounce, "Email": "nobody@nowhere.example"}).json()["outcomes"][0].startswith("unmatched")
    )
    assert postmark_post(api, {"no": "record type"}).json()["outcomes"][0].startswith("unparseable")
    status = statuses()
    assert [status[e] for e in (e0, e1, e2, e3)] == ["bounced", "active", "unsubscribed", "unsubscribed"]
    assert events_of("bounce") == [s0.id] and events_of("complaint") == [s2.id]


def test_the_report_shows_bounce_complaint_and_unsubscribe_rates(api, sendgrid):
    rows = sends_with_email(8)
    (s0, e0), (s1, e1), (s2, e2), (s3, e3) = rows[:4]
    sendgrid_post(api, sendgrid, [sg_event(s0, e0, "bounce", type="bounce", status="5.1.1"),
                                  sg_event(s1, e1, "spamreport"), sg_event(s2, e2, "spamreport"),
                                  sg_event(s3, e3, "unsubscribe")])
    cid = s0.campaign_id
    report = api("GET", f"/campaigns/{cid}/report?fresh=true", "analyst").json()
    d = report["deliverability"]
    delivered = len(rows)
    assert (d["overall"]["delivered"], d["overall"]["bounced"], d["overall"]["complaints"],
            d["overall"]["unsubscribes"]) == (delivered, 1, 2, 1)
    assert d["overall"]["complaint_rate"] == pytest.approx(2 / delivered)
    assert d["overall"]["bounce_rate"] == pytest.approx(1 / delivered)
    assert sum(b["delivered"] for b in d["segments"]) == delivered
    assert sum(v["complaints"] for v in d["variants"]) == 2 and d["variants"][0]["complaints"] >= 1
    assert any("spam complaint" in c for c in report["caveats"])  # 25% is far above 0.3%
    csv = api("GET", f"/campaigns/{cid}/report.csv", "analyst").text
    assert f"ALL,deliverability,,,complaint_rate,{delivered},2," in csv
    page = api("GET", f"/campaigns/{cid}/report.html", "analyst").text
    assert "Deliverability: bounces, complaints, unsubscribes" in page and "25.00%" in page
