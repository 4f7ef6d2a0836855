"""The check of ``--serve udp-file:PORT,dir=DIR`` (spec.KINDS calls it on the parsed Service)."""
from __future__ import annotations

from pathlib import Path

from mnet.services.errors import ServiceSpecError


def check(svc) -> None:
    """DIR must be an existing directory."""
    directory = svc.option("dir")
    if not Path(directory).is_dir():
        raise ServiceSpecError(f"bad --serve '{svc.kind}:{svc.port},dir={directory}': {directory} is not a directory")
