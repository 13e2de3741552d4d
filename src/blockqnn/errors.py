"""The package's one exception class for bad input.

Owns: the error type every user-facing check raises. The CLI turns it into a one-line message
and exit code 2; anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations


class BlockQNNError(ValueError):
    """Bad input: a malformed block, an invalid argument or config, unusable data."""
