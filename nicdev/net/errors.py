"""The one exception class ports raise when they cannot be set up or used."""
from __future__ import annotations

__all__ = ["PortError"]


class PortError(Exception):
    """A port could not be created or started; the message says why in one line.

    Raised for the user's environment or input (a missing namespace, a path in
    use, no permission), never for a malformed frame: those are counted drops.
    """
