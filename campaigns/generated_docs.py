"""Reference pages generated from the code (the CLI's and the API's): write them, or check that the
committed page is current (tests/test_docs.py runs the check, so a stale page fails the build)."""

import sys
from pathlib import Path


def write_or_check(document: Path, text: str, command: str, argv: list[str]) -> int:
    """`--check` in argv: exit status 1 when `document` differs from `text`; else write it."""
    if "--check" in argv:
        if not document.exists() or document.read_text(encoding="utf-8") != text:
            print(f"{document} is out of date: run `{command}`", file=sys.stderr)
            return 1
        print(f"{document} is up to date")
        return 0
    document.write_text(text, encoding="utf-8")
    print(f"wrote {document}")
    return 0
