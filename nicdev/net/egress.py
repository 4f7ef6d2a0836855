"""Finishing a frame at the egress that needs it, once however many need it.

Frames travel between ports as `(frame, meta)`: `meta` is a
`nicdev.virtio.offload.FrameMeta` (partial checksum, GSO, DATA_VALID) or
None for a finished frame. A frame with metadata stays as it is until it
leaves through an egress that cannot take that metadata: only there is it
finished (checksum completed, GSO cut into segments), and only once, even
when it is flooded to several such egresses. `EgressFrame` is that one
place: the switch makes one per frame and asks it for each output port;
the device does the same for a direct caller whose metadata its guest did
not negotiate; an impaired link does it before its impairments, since a
wire carries finished frames.
"""
from __future__ import annotations

from nicdev.virtio import offload
from nicdev.virtio.offload import DATA_VALID, FrameMeta, OffloadError

__all__ = ["EgressFrame"]


class EgressFrame:
    """`frame` with `meta` on its way out: as it is for an egress that takes
    the metadata, finished (on first need, then reused) for the others.

    After use, `finished` is None if no egress needed the finished frames,
    else the list of them ([] if `meta` could not be honoured: then `error`
    is the `OffloadError`, and each such egress got nothing)."""

    __slots__ = ("frame", "meta", "finished", "error")

    def __init__(self, frame: bytes, meta: FrameMeta | None) -> None:
        self.frame = frame
        self.meta = meta
        self.finished: list[bytes] | None = None
        self.error: OffloadError | None = None

    def for_egress(self, csum_partial: bool, gso_kinds) -> list[tuple[bytes, FrameMeta | None]]:
        """What an egress that takes partial checksums (`csum_partial`) and the
        GSO kinds `gso_kinds` gets: [(frame, meta)], or the finished frames,
        marked DATA_VALID where it takes metadata (we computed their checksums)."""
        meta = self.meta
        if meta is None:
            return [(self.frame, None)]
        if csum_partial and offload.acceptable(meta, True, gso_kinds):
            return [(self.frame, meta)]
        if not meta.needs_csum and not meta.gso_type:
            return [(self.frame, None)]        # DATA_VALID to an egress that cannot use it
        if self.finished is None:
            try:
                self.finished = offload.finish(self.frame, meta)
            except OffloadError as e:
                self.error = e
                self.finished = []
        mark = DATA_VALID if csum_partial else None
        return [(f, mark) for f in self.finished]
