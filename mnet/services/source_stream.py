"""tcp-source's bytes: the same documented pseudo-random stream for every connection."""
from __future__ import annotations

import random
from typing import Iterator

SOURCE_SEED = 0
SOURCE_CHUNK = 65536


def source_chunks(size: int, seed: int = SOURCE_SEED) -> Iterator[bytes]:
    """tcp-source's stream: ``random.Random(seed).randbytes(SOURCE_CHUNK)`` repeated, cut to ``size``."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        chunk = rng.randbytes(SOURCE_CHUNK)
        yield chunk if left >= SOURCE_CHUNK else chunk[:left]
        left -= SOURCE_CHUNK
