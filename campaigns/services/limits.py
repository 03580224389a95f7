"""Size caps on what a client stores (the request-level caps live in api/limits.py)."""

from campaigns.errors import InvalidInput
from campaigns.schemas import TemplateIn
from campaigns.settings import get_settings

TEMPLATE_PARTS = ("subject", "html", "text")


def check_template(template: TemplateIn | None) -> None:
    """Each part of a campaign template at most MAB_MAX_TEMPLATE_BYTES (UTF-8), checked before the
    template is compiled or trial-rendered."""
    if template is None:
        return
    cap = get_settings().max_template_bytes
    for part in TEMPLATE_PARTS:
        size = len(getattr(template, part).encode())
        if size > cap:
            raise InvalidInput(f"template.{part}", f"{size} bytes exceed the cap of {cap} (MAB_MAX_TEMPLATE_BYTES)")
