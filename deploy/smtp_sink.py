"""A minimal SMTP sink for deploy/smoke.sh (DELIVERY=smtp): accepts every message, writes each one to
DIR/<n>.eml, and keeps DIR/sessions.json up to date with the most sessions that were open at once per
recipient domain (a session counts for the domain of its first recipient), so the smoke test can check
the per-domain connection caps of the workers from the server's side.

    python smtp_sink.py DIR [PORT]

Standard library only (it runs in the application image); no TLS, no AUTH: a test double on a private
container network, never a mail server.
"""

import asyncio
import itertools
import json
import sys
from collections import Counter
from pathlib import Path

DIR = Path(sys.argv[1])
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 2525
numbers = itertools.count(1)
open_sessions: dict[int, str | None] = {}  # session -> domain of its first recipient
peak: Counter = Counter()
sessions = itertools.count(1)


def save_peaks() -> None:
    tmp = DIR / ".sessions.json.tmp"
    tmp.write_text(json.dumps({"peak": peak, "open": len(open_sessions)}))
    tmp.replace(DIR / "sessions.json")


async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    me = next(sessions)
    open_sessions[me] = None

    async def reply(line: str) -> None:
        writer.write(line.encode() + b"\r\n")
        await writer.drain()

    try:
        await reply("220 smoke-sink ESMTP")
        while line := await reader.readline():
            verb = line.decode("latin-1").strip().split(" ", 1)[0].upper()
            if verb == "RCPT":
                if open_sessions[me] is None:
                    domain = line.decode("latin-1").rsplit("@", 1)[-1].strip().rstrip(">").lower()
                    open_sessions[me] = domain
                    peak[domain] = max(peak[domain], sum(d == domain for d in open_sessions.values()))
                    save_peaks()
                await reply("250 OK")
            elif verb == "DATA":
                await reply("354 end with <CRLF>.<CRLF>")
                body = bytearray()
                while (chunk := await reader.readline()) not in (b".\r\n", b".\n", b""):
                    body += chunk[1:] if chunk.startswith(b"..") else chunk  # dot-unstuffing
                (DIR / f"{next(numbers)}-{me}.eml").write_bytes(bytes(body))
                await reply("250 OK: queued")
            elif verb == "QUIT":
                await reply("221 bye")
                break
            elif verb in ("EHLO", "HELO", "MAIL", "RSET", "NOOP"):
                await reply("250 OK")
            else:
                await reply("502 not implemented")
    finally:
        open_sessions.pop(me, None)
        save_peaks()
        writer.close()


async def main() -> None:
    DIR.mkdir(parents=True, exist_ok=True)
    save_peaks()
    server = await asyncio.start_server(session, "0.0.0.0", PORT)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
