"""The pytest plugin's `mnet_control` with `mnet_vm`: a driver test takes its
guest's link down and up through the control socket and sees the carrier."""
from __future__ import annotations

import pytest

from guest.wait import wait_in_guest

pytestmark = pytest.mark.integration

CARRIER = "/sys/class/net/eth0/carrier"


def test_mnet_control_takes_the_guests_link_down_and_up(mnet_vm, mnet_control):
    vm = mnet_vm("g", ip="10.0.0.1/24")
    wait_in_guest(vm, f"grep -q 1 {CARRIER}", 20, "carrier on at boot")
    assert mnet_control.link("g", False)["link"] is False
    wait_in_guest(vm, f"grep -q 0 {CARRIER}", 20, "carrier off")
    assert [p["link"] for p in mnet_control.ports() if p["name"] == "g"] == [False]
    mnet_control.link("g", True)
    wait_in_guest(vm, f"grep -q 1 {CARRIER}", 20, "carrier on again")
