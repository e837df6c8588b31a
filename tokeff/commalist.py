"""Comma-separated lists a user gives (`--models a,b`, `--pool beta,E`, `--form a,b,c`,
`--subjects`, `--fields`, their config keys): one reading of them for every flag.

An empty item (`64,`, `a,,b`, `$UNSET,b`) is a mistake to name, not a value to drop: dropping
it would run something other than what was typed. Each refusal is one line naming the field
(`tokeff.errors.UserError`).
"""

from __future__ import annotations

from collections.abc import Sequence

from tokeff.errors import UserError


def comma_items(text: str | Sequence[str], field: str, *, what: str = "item",
                hint: str = "give comma-separated values, as in a,b") -> list[str]:
    """The stripped items of `text` (a comma-separated string, or a list already split); an empty
    item is refused as "FIELD: an empty WHAT in TEXT; HINT"."""
    items = [str(x).strip() for x in (text.split(",") if isinstance(text, str) else text)]
    if not all(items):
        raise UserError(f"{field}: an empty {what} in {text!r}; {hint}")
    return items
