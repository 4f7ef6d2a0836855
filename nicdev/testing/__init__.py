"""Tools for driver integration tests: real peers made easy to drive.

`Testpmd` runs DPDK's testpmd as a vhost-user peer (either side of the
protocol); `nicdev.testing.pytest_plugin` (installed as a pytest plugin)
gives fixtures for a switch, guests and namespaces.
"""
from .testpmd import Testpmd, TestpmdError, find_testpmd

__all__ = ["Testpmd", "TestpmdError", "find_testpmd"]
