"""A person's age on a day: one definition for segments (SQL bounds) and templates (contact.age)."""

from __future__ import annotations

from datetime import date


def age_on(birth: date, today: date) -> int:
    """Whole years completed by ``today`` (a 29 February birthday counts from 1 March in other years)."""
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
