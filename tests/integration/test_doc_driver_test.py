import pytest

pytestmark = pytest.mark.integration


def test_linux_guest_ring_trace(mnet_switch, mnet_vm, mnet_trace):
    from stack import Stack
    from stack.drivers import VirtioNetNic

    # The guest first: the stack announces itself as it starts (a gratuitous
    # ARP, flooded), and a frame for a port whose guest has not started its
    # receive ring yet is a counted drop there.
    vm = mnet_vm("vm0", ip="10.0.0.1/24")
    nic = VirtioNetNic(mnet_switch.vhost_user_port("stack").socket_path, timeout=30)
    stack = Stack(nic, "10.0.0.9/24").start()
    try:
        r = vm.run("ping -c 5 -i 0.2 -w 20 10.0.0.9", timeout=40)
        assert r.status == 0 and "5 packets received" in r.output, r.output
    finally:
        stack.stop()
        nic.close()

    trace = mnet_trace.assertions()                         # stops recording
    trace.assert_rx_buffers_posted("vm0", at_least=64)     # Linux fills its receive ring
    trace.assert_longest_chain("vm0", at_most=2, queue=1)  # a ping is a small linear frame
    trace.assert_no_drops("vm0")
    # The stack's driver keeps transmit interrupts off (used_event behind) under EVENT_IDX.
    trace.assert_calls_suppressed("stack", reason="event_idx")
