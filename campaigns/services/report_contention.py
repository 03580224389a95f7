"""The report's "Shared customers" section: how many of the campaign's targeted customers went to
another campaign under the frequency cap (services/contention.py), summed over its periods."""

from collections import Counter

from sqlmodel import Session

from campaigns.repositories import contention as repo


def section(session: Session, campaign_id: int) -> dict:
    """{"lost": total customer slots, "by_campaign": [{campaign_id, name, customers, periods, text}]},
    the campaign holding the most first. Its own id: customers its own earlier emails had brought
    to the cap."""
    totals: Counter = Counter()
    periods: dict[int, list[int]] = {}
    for number, lost in repo.periods_lost_to(session, campaign_id):
        for other, n in lost.items():
            totals[int(other)] += int(n)
            periods.setdefault(int(other), []).append(number)
    names = repo.campaign_names(session, list(totals))
    rows = []
    for other, n in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])):
        name = names.get(other, f"#{other}")
        text = (f"{n:,} of your targeted customers had reached the frequency cap with this campaign's own "
                "earlier emails" if other == campaign_id else
                f"{n:,} of your targeted customers went to campaign {other} ({name})")
        rows.append({"campaign_id": other, "name": name, "customers": n, "periods": periods[other], "text": text})
    return {"lost": sum(totals.values()), "by_campaign": rows}
