"""Exceptions raised by the guest image builder and the guest command channel.

Three kinds, so callers can tell "the image could not be made" from "the
guest did not answer in time" from "the guest (or the link to it) said
something we cannot accept".
"""


class GuestError(Exception):
    """Base class of every error raised by the guest package."""


class GuestBuildError(GuestError):
    """The guest image could not be built (missing program, package, module...)."""


class GuestTimeout(GuestError):
    """The guest did not answer within the allowed time."""


class GuestChannelError(GuestError):
    """The command channel broke (socket closed, malformed reply...)."""
