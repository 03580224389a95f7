"""The per-message cost of DKIM signing on the send path.

Builds the same demo-sized email (text + HTML, ~6 KB) N times with `MessageWriter`: unsigned (the
baseline, measured in the same run), signed by each key kind (campaigns/dkim_signing.py, OpenSSL),
with both (dual signing), and, for reference, by dkimpy's own `dkim.sign` (pure-Python RSA). Prints
microseconds per message and the ratio to the unsigned build.

Run:  nice -n 10 .venv/bin/python benchmarks/bench_dkim.py [--messages 2000]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: E402

from campaigns.dkim_signing import Signer, load_key  # noqa: E402
from campaigns.rendering import MessageWriter, list_id  # noqa: E402

TEXT = "Hello Ann,\n\nOur spring menu is here: 20% off any main course this week.\n\n" * 40
HTML = "<p>Hello Ann,</p><p>Our spring menu is here: <b>20% off</b> any main course this week.</p>\n" * 40


def pem(private) -> bytes:
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def per_message(writer: MessageWriter, n: int) -> float:
    """Seconds per built (and, with a signer, signed) message: the best of three runs."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(n):
            writer.build(to=f"c{i}@example.com", subject="Spring menu: 20% off", html=HTML, text=TEXT,
                         unsubscribe_url=f"https://mab.example/u/unsub.{i}.0123456789abcdef0123456789abcdef",
                         message_id=f"<send-{i}.42@example.com>")
        best = min(best, (time.perf_counter() - start) / n)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    n = parser.parse_args().messages
    folder = Path(tempfile.mkdtemp())
    (folder / "rsa.pem").write_bytes(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    (folder / "ed.pem").write_bytes(pem(ed25519.Ed25519PrivateKey.generate()))
    rsa_key, ed_key = load_key("r", folder / "rsa.pem"), load_key("e", folder / "ed.pem")
    lid = list_id(1, "Spring menu", "example.com")

    def writer(keys):
        signer = Signer("example.com", keys) if keys else None
        return MessageWriter("Shop <news@example.com>", "example.com", lid, signer)

    rows = [("unsigned (baseline)", per_message(writer([]), n))]
    rows.append(("RSA-2048", per_message(writer([rsa_key]), n)))
    rows.append(("Ed25519", per_message(writer([ed_key]), n)))
    rows.append(("RSA-2048 + Ed25519 (dual)", per_message(writer([rsa_key, ed_key]), n)))
    try:
        import dkim
    except ImportError:
        dkim = None
    if dkim is not None:  # reference: dkimpy's own signing, pure-Python RSA (fewer messages: it is slow)
        plain, key = writer([]), (folder / "rsa.pem").read_bytes()
        m = max(n // 20, 20)
        start = time.perf_counter()
        for i in range(m):
            raw = plain.build(to=f"c{i}@example.com", subject="Spring menu: 20% off", html=HTML, text=TEXT,
                              unsubscribe_url="https://mab.example/u/x").raw
            dkim.sign(raw, b"r", b"example.com", key)
        rows.append(("RSA-2048 with dkimpy's dkim.sign (reference)", (time.perf_counter() - start) / m))

    base = rows[0][1]
    size = len(writer([]).build(to="a@example.com", subject="s", html=HTML, text=TEXT, unsubscribe_url="https://u").raw)
    print(f"{n} messages of {size:,} bytes each")
    print(f"{'build':<46} {'µs/message':>11} {'× unsigned':>11} {'messages/s':>11}")
    for name, seconds in rows:
        print(f"{name:<46} {seconds * 1e6:>11,.0f} {seconds / base:>11.1f} {1 / seconds:>11,.0f}")


if __name__ == "__main__":
    main()
