"""The package's one exception class for bad input, and how messages echo that input.

Owns: the error type every user-facing check raises, and `clip`, the one way a message quotes
what the user gave (cut, one line). The CLI turns a `BlockQNNError` into a one-line message
and exit code 2; anything else escaping is a bug and keeps its traceback. Must not import
anything of the package: every module imports this one.
"""

from __future__ import annotations

ECHO_LIMIT = 80  # characters of a user's value quoted in a message; longer values are cut
MESSAGE_LIMIT = 1000  # characters of a whole error line (a safety net behind `clip`)
_ELLIPSIS = "..."


class BlockQNNError(ValueError):
    """Bad input: a malformed block, an invalid argument or config, unusable data."""


def clip(value: object, limit: int = ECHO_LIMIT, quote: bool = False) -> str:
    """`value` as text for an error message: one line, at most `limit` characters (cut with
    "..."). Strings are shown as they are (`quote=True`: as a repr, for values whose spaces
    or quotes matter); anything else as its repr. Integers too large to print (Python refuses
    to convert those of over 4,300 digits) are described by their size instead."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        text = f"<an integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    elif isinstance(value, str) and not quote:
        text = value.replace("\r", "\\r").replace("\n", "\\n")
    else:
        try:
            text = repr(value)
        except (ValueError, RecursionError):  # a container holding a huge or deep value
            text = f"<a {type(value).__name__}>"
        text = text.replace("\r", "\\r").replace("\n", "\\n")
    if len(text) > limit:
        text = text[: max(limit - len(_ELLIPSIS), 1)] + _ELLIPSIS
    return text


def one_line(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """A message as exactly one line of at most `limit` characters (what the CLI prints)."""
    return clip(" ".join(message.split()) if "\n" in message else message, limit)
