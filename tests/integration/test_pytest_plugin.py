"""The `mnet` pytest plugin's fixtures, used the way a driver-test author would:
a Linux guest and DPDK's testpmd (as a virtio-user frontend in icmpecho mode,
which answers ARP and ping for any address) on one switch."""
import pytest

pytestmark = pytest.mark.integration


def test_guest_pings_testpmd_through_the_switch(mnet_switch, mnet_vm, mnet_testpmd):
    pmd_port = mnet_switch.vhost_user_port("pmd")
    pmd = mnet_testpmd.frontend(pmd_port.socket_path, "icmpecho")
    pmd.wait_for(lambda: "connected" in mnet_switch.call(lambda: pmd_port.status), "testpmd to connect", 30)
    vm = mnet_vm("guest", ip="10.0.0.1/24")
    r = vm.run("ping -c 3 -w 15 10.0.0.77", timeout=30)
    assert r.status == 0 and "3 packets received" in r.output, r.output + pmd.output()[-2000:]
    stats = mnet_switch.stats()
    assert stats["ports"]["pmd"]["rx_frames"] >= 3, stats["ports"]["pmd"]


def test_netns_fixture_gives_a_fresh_namespace(mnet_netns):
    from nicdev.net.netns import netns_exists

    assert netns_exists(mnet_netns)
