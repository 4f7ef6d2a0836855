"""guest.wait.wait_in_guest: one bounded shell loop in the guest, GuestTimeout if it runs out."""
import subprocess

import pytest

from guest.channel import CommandResult
from guest.errors import GuestTimeout
from guest.wait import wait_in_guest


class ShellVm:
    """Runs the guest's command in the host's sh, with a `usleep` that does not sleep."""

    name = "vm"

    def __init__(self) -> None:
        self.commands: list[tuple[str, float]] = []

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        self.commands.append((command, timeout))
        r = subprocess.run(["sh", "-c", "usleep() { :; }; " + command], capture_output=True, text=True, timeout=10)
        return CommandResult(r.returncode, r.stdout + r.stderr)


def test_a_true_condition_returns_after_one_round_trip():
    vm = ShellVm()
    wait_in_guest(vm, "true", timeout=2)
    assert len(vm.commands) == 1
    assert vm.commands[0][1] > 2          # the channel's own timeout covers the loop in the guest


def test_a_condition_that_never_holds_is_a_guest_timeout_naming_what():
    vm = ShellVm()
    with pytest.raises(GuestTimeout, match=r"vm: iperf3 listening not reached within 1 s \(false\)"):
        wait_in_guest(vm, "false", timeout=1, what="iperf3 listening")
    assert len(vm.commands) == 1
