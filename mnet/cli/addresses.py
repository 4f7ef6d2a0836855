"""Address options shared by the commands (`--ip`, `--gateway`), checked once."""
from __future__ import annotations

import ipaddress

from .errors import CliError


def parse_ip_and_gateway(ip: str, gateway: str | None) -> ipaddress.IPv4Interface:
    """`--ip ADDR/LEN` and an optional `--gateway` inside that subnet; CliError naming the option."""
    if "/" not in ip:
        raise CliError(f"bad --ip '{ip}': give the prefix length too, like {ip}/24")
    try:
        iface = ipaddress.IPv4Interface(ip)
    except ValueError:
        raise CliError(f"bad --ip '{ip}': expected ADDR/LEN like 10.0.0.1/24") from None
    if gateway:
        try:
            gw = ipaddress.IPv4Address(gateway)
        except ValueError:
            raise CliError(f"bad --gateway '{gateway}': expected an IPv4 address") from None
        if gw not in iface.network:
            raise CliError(f"bad --gateway '{gateway}': not in {iface.network}")
    return iface
