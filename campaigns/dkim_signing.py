"""DKIM signatures (RFC 6376; Ed25519: RFC 8463) on every outgoing email, and the DNS records to publish.

Each key of `MAB_DKIM_KEYS` (`selector=private-key.pem`, comma-separated) signs every message: one
RSA-2048 key plus one Ed25519 key is the dual signing RFC 8463 recommends, since not every receiver
verifies Ed25519 yet. `MAB_DKIM_NEXT_KEYS` holds keys published ahead of a rotation: `mab check-domain`
prints their records too, and they sign nothing until moved into `MAB_DKIM_KEYS`.

Signing is written here rather than through dkimpy's `dkim.sign`, whose pure-Python RSA takes ~24 ms
a message (two 1024-bit `pow`s): 12M emails would cost 80 CPU hours. We sign our own messages, whose
headers we wrote, so relaxed header / simple body canonicalization is a few string operations, and the
signature is OpenSSL's (`cryptography`). The tests verify every signature with dkimpy.
"""

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from campaigns.settings import Settings

# What the signature covers (those present): every header a receiver shows or acts on. From is also
# listed twice in h= ("oversigned"): a From header added on the way then breaks the signature.
SIGNED_HEADERS = ("from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe",
                  "list-unsubscribe-post", "mime-version", "content-type")
_WSP = re.compile(rb"[ \t]+")
MIN_RSA_BITS = 2048


class DkimConfigError(ValueError):
    """A configured key is missing, unreadable, or not RSA (2048 bits or more) / Ed25519."""


@dataclass(frozen=True)
class DkimKey:
    selector: str
    path: Path
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @property
    def algorithm(self) -> str:
        return "ed25519-sha256" if isinstance(self.private, ed25519.Ed25519PrivateKey) else "rsa-sha256"

    def public_record(self) -> str:
        """The TXT record's value at `<selector>._domainkey.<domain>`."""
        public = self.private.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):  # RFC 8463: the raw 32-byte key
            der, kind = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw), "ed25519"
        else:
            der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            kind = "rsa"
        return f"v=DKIM1; k={kind}; p={base64.b64encode(der).decode('ascii')}"

    def raw_signature(self, data: bytes) -> bytes:
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            return self.private.sign(hashlib.sha256(data).digest())  # RFC 8463: Ed25519 over the SHA-256
        return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())


def parse_keys(spec: str) -> list[tuple[str, Path]]:
    """`selector=path, selector=path` → [(selector, path)]; a malformed entry is an error, never skipped."""
    pairs = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        selector, sep, path = (p.strip() for p in entry.partition("="))
        if not sep or not selector or not path or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", selector):
            raise DkimConfigError(f"DKIM key {entry!r}: expected selector=/path/to/private-key.pem")
        pairs.append((selector, Path(path)))
    return pairs


def load_key(selector: str, path: Path) -> DkimKey:
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise DkimConfigError(f"DKIM key {selector}={path}: cannot be read as an unencrypted PEM "
                              f"private key ({exc})") from None
    if isinstance(private, rsa.RSAPrivateKey) and private.key_size < MIN_RSA_BITS:
        raise DkimConfigError(f"DKIM key {selector}={path}: RSA of {private.key_size} bits; use {MIN_RSA_BITS}+")
    if not isinstance(private, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise DkimConfigError(f"DKIM key {selector}={path}: {type(private).__name__}; use RSA or Ed25519")
    return DkimKey(selector, path, private)


def signing_domain(settings: Settings) -> str:
    """MAB_DKIM_DOMAIN, else the From domain (DMARC aligns the signature's d= with it)."""
    return settings.dkim_domain or settings.mail_from.rsplit("@", 1)[-1].rstrip(">").strip().lower()


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 3.4.2: lower-case name, unfolded value, runs of whitespace as one space, trimmed."""
    return name.strip().lower() + b":" + _WSP.sub(b" ", value.replace(b"\r\n", b"")).strip()


def _fields(head: bytes) -> dict[bytes, bytes]:
    """The header block's fields by lower-case name (the last one wins, as a verifier picks it)."""
    fields: dict[bytes, bytes] = {}
    for line in re.split(rb"\r\n(?![ \t])", head):
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value
    return fields


class Signer:
    """Signs raw CRLF messages with every configured key; one per chunk, keys loaded once per process."""

    def __init__(self, domain: str, keys: list[DkimKey]):
        self.domain = domain
        self.keys = keys

    def sign(self, raw: bytes, now: int | None = None) -> bytes:
        head, sep, body = raw.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a message without a header/body separator cannot be signed")
        # simple body canonicalization: the body with its trailing empty lines reduced to one CRLF
        body_hash = base64.b64encode(hashlib.sha256(body.rstrip(b"\r\n") + b"\r\n").digest()).decode("ascii")
        fields = _fields(head)
        signed = [h for h in SIGNED_HEADERS if h.encode() in fields]
        if "from" in signed:
            signed.append("from")  # oversigned: see SIGNED_HEADERS
        # A name listed twice is hashed once: its second instance does not exist, and RFC 6376 5.4.2
        # hashes a missing instance as nothing at all.
        canonical = b"".join(_relaxed_header(h.encode(), fields[h.encode()]) + b"\r\n"
                             for h in dict.fromkeys(signed))
        stamp = int(time.time()) if now is None else now
        # folded five names a line, so no header line passes 78 characters
        names = ":\r\n ".join(":".join(signed[i:i + 5]) for i in range(0, len(signed), 5))
        added = []
        for key in self.keys:
            value = (f" v=1; a={key.algorithm}; c=relaxed/simple; d={self.domain}; s={key.selector};\r\n"
                     f" t={stamp};\r\n h={names};\r\n bh={body_hash};\r\n b=")
            data = canonical + _relaxed_header(b"DKIM-Signature", value.encode("ascii"))
            signature = base64.b64encode(key.raw_signature(data)).decode("ascii")
            folded = "\r\n ".join(signature[i:i + 72] for i in range(0, len(signature), 72))
            added.append(f"DKIM-Signature:{value}{folded}\r\n".encode("ascii"))
        return b"".join(added) + raw


@lru_cache(maxsize=8)
def _loaded(spec: str, domain: str, mtimes: tuple) -> Signer | None:
    keys = [load_key(selector, path) for selector, path in parse_keys(spec)]
    return Signer(domain, keys) if keys else None


def signer_for(settings: Settings) -> Signer | None:
    """The configured signer, or None when MAB_DKIM_KEYS is empty. Keys are read once per process
    (again when a key file changes: rotation needs no restart of the workers)."""
    if not settings.dkim_keys.strip():
        return None
    pairs = parse_keys(settings.dkim_keys)
    mtimes = tuple(_mtime(path) for _, path in pairs)
    return _loaded(settings.dkim_keys, signing_domain(settings), mtimes)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0  # load_key then says what is wrong with it


def dns_records(settings: Settings) -> list[tuple[str, str, str]]:
    """(name, TXT value, why) of every record the configured domain needs: one per DKIM key (signing
    and next), SPF and DMARC. Raises DkimConfigError for a key that cannot be read."""
    domain = signing_domain(settings)
    records = []
    for spec, role in ((settings.dkim_keys, "signs now"), (settings.dkim_next_keys, "next key: publish before use")):
        for selector, path in parse_keys(spec):
            key = load_key(selector, path)
            records.append((f"{selector}._domainkey.{domain}", key.public_record(),
                            f"DKIM {key.algorithm} ({role}; {path})"))
    relay = settings.smtp_host if settings.delivery_backend == "smtp" else "your relay"
    records.append((domain, "v=spf1 mx ~all",
                    f"SPF: replace `mx` by the addresses of the hosts that relay your mail ({relay}), e.g. "
                    "`ip4:203.0.113.5` or your ESP's `include:`; end with -all once every sender is listed"))
    records.append((f"_dmarc.{domain}", f"v=DMARC1; p=none; adkim=s; aspf=r; rua=mailto:dmarc-reports@{domain}",
                    "DMARC: start at p=none, read the aggregate reports, then p=quarantine and p=reject"))
    return records
