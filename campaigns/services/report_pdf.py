"""The HTML lift report as a PDF, printed by headless Chromium where it is installed.

The page is self-contained (inline SVG and styles) and has a print stylesheet, so Chromium's own
print-to-PDF is the whole renderer: no PDF library, nothing fetched from the network (the browser
runs with every host name unresolvable)."""

import shutil
import subprocess
import tempfile
from pathlib import Path

from campaigns.errors import Unavailable

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_SECONDS = 120


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def html_to_pdf(html: str, browser: str | None = None) -> bytes:
    """PDF bytes of an HTML page (render it with `reports.render_html(report)`). Unavailable when no
    Chromium is installed or it fails, with its reason."""
    browser = browser or find_browser()
    if browser is None:
        raise Unavailable(f"no headless browser to print the PDF with (looked for {', '.join(BROWSERS)}); "
                          "install chromium, or print the HTML report from a browser")
    with tempfile.TemporaryDirectory(prefix="mab-report-pdf-") as tmp:
        page, pdf = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        page.write_text(html, encoding="utf-8")
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
               "--disable-background-networking", f"--user-data-dir={tmp}/profile",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--no-pdf-header-footer", f"--print-to-pdf={pdf}",
               page.as_uri()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_SECONDS,  # noqa: S603
                                  env={"HOME": tmp, "PATH": "/usr/bin:/bin"})
        except subprocess.TimeoutExpired:
            raise Unavailable(f"{browser} did not print the PDF within {TIMEOUT_SECONDS} s") from None
        except OSError as exc:
            raise Unavailable(f"{browser} could not print the PDF: {exc}") from None
        if done.returncode != 0 or not pdf.exists() or pdf.stat().st_size == 0:
            raise Unavailable(f"{browser} could not print the PDF (exit {done.returncode}): {done.stderr[-500:]}")
        return pdf.read_bytes()
