"""What every test (unit and integration) relies on."""
import signal

# Tests stop `mnet` processes with SIGINT, as a user's Ctrl-C does. A shell without job
# control starts a background command (`make test &` in a script, some CI runners) with
# SIGINT ignored, and an ignored signal stays ignored across exec: every child would then
# ignore the tests' SIGINT. Caught here, it is back to the default in each child, and
# Python turns it into KeyboardInterrupt there as usual.
signal.signal(signal.SIGINT, signal.default_int_handler)
