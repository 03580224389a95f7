"""A campaign's audience beyond its segments, as SQL conditions on the customer table."""


def conditions(audience: dict | None) -> tuple:
    """No audience filter: every targeted customer of the segments."""
    return ()
