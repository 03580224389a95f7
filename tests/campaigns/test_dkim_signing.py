"""DKIM: every signature is verified by dkimpy (an independent implementation) against the public
key as `mab check-domain` prints it; on messages built here, on the outbox files of a real period, and
on what a real SMTP server (aiosmtpd) received."""

import email
import email.policy
import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from typer.testing import CliRunner

from campaigns import dkim_signing
from campaigns.cli import app
from campaigns.models import PeriodStatus
from campaigns.rendering import MessageWriter, list_id
from campaigns.services import periods
from campaigns.settings import Settings, get_settings
from tests.campaigns.test_periods import new_period, outbox_files, setup_campaign
from tests.smtp_server import SmtpServer


def write_key(path, kind: str = "rsa", bits: int = 2048):
    private = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else \
        rsa.generate_private_key(public_exponent=65537, key_size=bits)
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dkim")
    return {"rsa": write_key(folder / "rsa.pem"), "ed": write_key(folder / "ed.pem", "ed25519"),
            "rsa2": write_key(folder / "rsa2.pem")}


def published(settings: Settings) -> dict[bytes, bytes]:
    """The DNS a receiver would query: the DKIM records `mab check-domain` prints."""
    return {f"{name}.".encode(): value.encode() for name, value, _ in dkim_signing.dns_records(settings)
            if "._domainkey." in name}


def verified(raw: bytes, dns: dict[bytes, bytes]) -> list[tuple[bytes, bool]]:
    """(selector, verifies) of each DKIM-Signature on the message, in order."""
    checker = dkim.DKIM(raw)
    sigs = [v for k, v in email.message_from_bytes(raw).items() if k.lower() == "dkim-signature"]
    selectors = [re.search(r"\bs=([^;\s]+)", re.sub(r"\s+", "", s)).group(1).encode() for s in sigs]
    return [(sel, _verify(checker, i, dns)) for i, sel in enumerate(selectors)]


def _verify(checker: dkim.DKIM, index: int, dns: dict[bytes, bytes]) -> bool:
    try:
        return checker.verify(idx=index, dnsfunc=lambda name, timeout=5: dns.get(name))
    except dkim.ValidationError:  # dkimpy raises on a body hash mismatch rather than answer False
        return False


def build(settings: Settings, subject: str = "Olá — 20% off", to: str = "bob@example.com") -> bytes:
    writer = MessageWriter("Café <news@example.com>", "example.com", list_id(7, "Spring sale", "example.com"),
                           dkim_signing.signer_for(settings))
    return writer.build(to=to, subject=subject, html="<p>Hello</p>\n" * 50, text="naïve " * 300,
                        unsubscribe_url="https://x.example/u/unsub.1.abc",
                        unsubscribe_mailto="unsubscribe@example.com?subject=unsub.1.abc").raw


def test_rsa_and_ed25519_signatures_verify_and_cover_the_headers_that_matter(keys):
    settings = Settings(dkim_keys=f"s2048={keys['rsa']}, ed1={keys['ed']}")
    raw = build(settings)
    dns = published(settings)
    assert verified(raw, dns) == [(b"s2048", True), (b"ed1", True)]
    head = email.message_from_bytes(raw, policy=email.policy.default)
    sigs = [re.sub(r"\s+", "", str(s)) for s in head.get_all("DKIM-Signature")]
    assert "a=rsa-sha256" in sigs[0] and "a=ed25519-sha256" in sigs[1]
    for sig in sigs:
        assert "d=example.com" in sig and "c=relaxed/simple" in sig
        signed = re.search(r"h=([^;]+)", sig).group(1).split(":")
        assert {"from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe",
                "list-unsubscribe-post"} <= set(signed)
        assert signed.count("from") == 2  # oversigned
    signature_lines = raw.split(b"\r\nFrom: ", 1)[0].split(b"\r\n")  # the signatures come first
    assert len(signature_lines) > 8 and all(len(line) <= 78 for line in signature_lines)
    # a DKIM record of a 2048-bit key is longer than one TXT string: printed in 255-character pieces
    assert len(dns[b"s2048._domainkey.example.com."]) > 255


@pytest.mark.parametrize("tamper", [
    lambda raw: raw.replace(b"Subject: ", b"Subject: Re: "),
    lambda raw: raw.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                            b"List-Unsubscribe-Post: nothing"),
    lambda raw: raw.replace(b"Hello", b"Hallo", 1),
    lambda raw: raw.replace(b"\r\nFrom: ", b"\r\nFrom: evil@example.net\r\nFrom: ", 1),  # an added From
])
def test_any_change_to_a_signed_header_or_the_body_breaks_every_signature(keys, tamper):
    settings = Settings(dkim_keys=f"s2048={keys['rsa']}, ed1={keys['ed']}")
    raw = build(settings)
    changed = tamper(raw)
    assert changed != raw
    assert [ok for _, ok in verified(changed, published(settings))] == [False, False]


def test_a_signature_does_not_verify_against_another_key(keys):
    settings = Settings(dkim_keys=f"s1={keys['rsa']}")
    other = {b"s1._domainkey.example.com.": published(Settings(dkim_keys=f"s1={keys['rsa2']}"))[
        b"s1._domainkey.example.com."]}
    assert verified(build(settings), other) == [(b"s1", False)]


def test_rotation_with_two_selectors(keys):
    """Publish the next key, move signing to it; mail signed by the old key still verifies while its
    record stays published, and the next key signs nothing before it is moved."""
    before = Settings(dkim_keys=f"2026a={keys['rsa']}", dkim_next_keys=f"2026b={keys['rsa2']}")
    old_mail = build(before)
    assert verified(old_mail, published(before)) == [(b"2026a", True)]  # the next key did not sign
    assert set(published(before)) == {b"2026a._domainkey.example.com.", b"2026b._domainkey.example.com."}

    after = Settings(dkim_keys=f"2026b={keys['rsa2']}", dkim_next_keys=f"2026a={keys['rsa']}")  # kept published
    new_mail = build(after)
    dns = published(after)
    assert verified(new_mail, dns) == [(b"2026b", True)]
    assert verified(old_mail, dns) == [(b"2026a", True)]


def test_no_key_no_signature_and_bad_keys_are_refused(tmp_path, keys):
    assert dkim_signing.signer_for(Settings()) is None
    assert b"DKIM-Signature" not in build(Settings())
    weak = write_key(tmp_path / "weak.pem", bits=1024)
    for spec, message in [(f"s1={weak}", "RSA of 1024 bits"), (f"s1={tmp_path / 'none.pem'}", "cannot be read"),
                          (str(keys["rsa"]), "expected selector="), (f"bad selector={keys['rsa']}", "expected")]:
        with pytest.raises(dkim_signing.DkimConfigError, match=message):
            dkim_signing.signer_for(Settings(dkim_keys=spec))


def test_check_domain_prints_dkim_spf_and_dmarc(monkeypatch, keys):
    monkeypatch.setenv("MAB_DKIM_KEYS", f"s1={keys['rsa']},ed1={keys['ed']}")
    monkeypatch.setenv("MAB_DKIM_NEXT_KEYS", f"s2={keys['rsa2']}")
    monkeypatch.setenv("MAB_MAIL_FROM", "Shop <news@shop.example>")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["check-domain"])
        assert result.exit_code == 0, result.output
        records = dict(re.findall(r"^(\S+)\. IN TXT (.+)$", result.output, re.M))
        assert set(records) == {"s1._domainkey.shop.example", "ed1._domainkey.shop.example",
                                "s2._domainkey.shop.example", "shop.example", "_dmarc.shop.example"}
        value = "".join(re.findall(r'"([^"]*)"', records["s1._domainkey.shop.example"]))
        assert value == published(get_settings())[b"s1._domainkey.shop.example."].decode()
        assert records["shop.example"].startswith('"v=spf1 ')
        assert records["_dmarc.shop.example"].startswith('"v=DMARC1; p=none')

        monkeypatch.setenv("MAB_DKIM_KEYS", "s1=/nonexistent.pem")
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["check-domain"])
        assert result.exit_code == 1 and "cannot be read" in result.output
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_a_period_signs_every_outbox_file(sqlite_url, redis_server, keys, monkeypatch):
    monkeypatch.setenv("MAB_DKIM_KEYS", f"s1={keys['rsa']},ed1={keys['ed']}")
    get_settings.cache_clear()
    cid = setup_campaign(40)
    pid = new_period(cid)
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    files = outbox_files(cid, 1)
    assert len(files) == 40
    dns = published(get_settings())
    for path in files:
        raw = path.read_bytes()
        assert verified(raw, dns) == [(b"s1", True), (b"ed1", True)], path
        assert f"<campaign-{cid}.example.com>".encode() in raw  # List-Id


def test_messages_received_over_smtp_verify(database_url, redis_server, keys, monkeypatch):
    with SmtpServer() as server:
        for name, value in {"DELIVERY_BACKEND": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(server.port),
                            "DKIM_KEYS": f"s1={keys['rsa']},ed1={keys['ed']}"}.items():
            monkeypatch.setenv(f"MAB_{name}", value)
        get_settings.cache_clear()
        cid = setup_campaign(30)
        pid = new_period(cid)
        assert periods.run_period(pid) == PeriodStatus.COMPLETED
        dns = published(get_settings())
        assert len(server.handler.messages) == 30
        for message in server.handler.messages:
            assert verified(message.raw, dns) == [(b"s1", True), (b"ed1", True)]
    get_settings.cache_clear()
