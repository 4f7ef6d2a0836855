"""What every test (unit and integration) relies on."""
import signal

from hypothesis import HealthCheck, settings

# Tests stop `mnet` processes with SIGINT, as a user's Ctrl-C does. A shell without job
# control starts a background command (`make test &` in a script, some CI runners) with
# SIGINT ignored, and an ignored signal stays ignored across exec: every child would then
# ignore the tests' SIGINT. Caught here, it is back to the default in each child, and
# Python turns it into KeyboardInterrupt there as usual.
signal.signal(signal.SIGINT, signal.default_int_handler)

# Property tests prove properties, not speed. Hypothesis's defaults fail an example that
# takes over 200 ms (deadline) and a test whose data takes long to generate (too_slow):
# on a loaded 2-core machine running TCG guests both happen by chance. pytest-timeout
# still bounds every test. The profile is loaded before any test module is imported, so
# a test's own @settings(...) changes only what it names. print_blob: a failure found in
# CI prints what reproduces it here (@reproduce_failure).
settings.register_profile("mnet", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile("mnet")
