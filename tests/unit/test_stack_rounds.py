"""The stack's thread takes input in rounds under its one lock: how long one round may hold it."""
from ipaddress import IPv4Address

from stack import LoopbackNicPair, Stack
from stack.runtime import RX_BURST, RX_BURSTS_PER_ROUND
from stack.wire import ArpOperation, ArpRepr, EtherType, EthernetRepr, MacAddress


def _arp_for_someone_else(n: int) -> bytes:
    ask = ArpRepr(ArpOperation.REQUEST, MacAddress("02:00:00:00:00:01"), IPv4Address("10.0.0.1"),
                  MacAddress(bytes(6)), IPv4Address("10.0.0.100") + n % 100)
    return EthernetRepr(MacAddress.broadcast(), MacAddress("02:00:00:00:00:01"), EtherType.ARP).emit(ask.emit())


def test_a_round_takes_in_at_most_128_frames_then_lets_go_of_the_lock():
    # While thousands of handshakes arrive, the service's loop must get the lock between
    # rounds to accept them: a round of 512 frames starved it (its accept queue of 4,096
    # overflowed and SYNs were dropped); 128 frames keep a round to a few milliseconds.
    pair = LoopbackNicPair()
    stack = Stack(pair.b, "10.0.0.2/24")  # not started: its rounds are run here, by hand
    try:
        pair.a.transmit([(_arp_for_someone_else(n), None) for n in range(1000)])
        assert RX_BURST * RX_BURSTS_PER_ROUND == 128
        with stack.lock:
            taken = [stack._round_locked() for _ in range(9)]
        assert taken == [128] * 7 + [104, 0]
        assert stack.iface.counters.get("arp", "rx") == 1000
    finally:
        pair.close()
