"""`mnet switch`: the L2 switch with its ports, until interrupted."""
from __future__ import annotations

import argparse
import signal
import sys

def _description() -> str:
    from nicdev.net.portspec import PORT_SPEC_HELP

    return ("Run the L2 learning switch. Each --port adds one port:\n\n" + PORT_SPEC_HELP +
            "\n\n--pcap FILE captures every frame through the ports' rings to a pcapng file: one\n"
            "interface per port, each packet with its direction and a comment naming port,\n"
            "queue and descriptor head (docs/tracing.md).\n"
            "\nRuns until SIGINT or SIGTERM, then prints each port's status and counters.\n")


DESCRIPTION = _description()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--port", action="append", default=[], metavar="NAME=KIND:ARG",
                   help="a port (repeatable; see above)")
    p.add_argument("--ageing", type=float, default=300.0, metavar="SECONDS",
                   help="forget learned MAC addresses after this long (default 300)")
    p.add_argument("--control", metavar="PATH",
                   help="the control socket for `mnet ctl` (mode 0600, in a directory of the owner's alone); "
                        "default switch-PID.sock in $XDG_RUNTIME_DIR/mnet (without it /run/mnet for root, "
                        "/tmp/mnet-UID for others); 'off': none")
    p.add_argument("--stats-interval", type=float, default=0.0, metavar="SECONDS",
                   help="print the counter table every SECONDS (default: only on exit)")
    p.add_argument("--trace", metavar="FILE",
                   help="record every port's ring events from the start, as JSON lines (docs/tracing.md)")
    p.add_argument("--pcap", metavar="FILE",
                   help="capture the frames through every port's rings to FILE (pcapng)")


def start_capture(path: str, switch, loop):
    """A pcapng writer on every port's frames, flushed periodically."""
    from mnet.cli.errors import CliError
    from nicdev.net.capture_time import FLUSH_INTERVAL
    from nicdev.net.pcapng import PcapngWriter

    try:
        writer = PcapngWriter(path)
    except OSError as exc:
        raise CliError(f"bad --pcap: {exc.strerror}") from None
    for port in switch.ports.values():
        writer.add_interface(port.name, f"{port.kind} port {port.name}")
    switch.add_frame_sink(writer)          # ports added later (Python API) too

    def flush() -> None:
        writer.flush()
        loop.call_later(FLUSH_INTERVAL, flush)
    loop.call_later(FLUSH_INTERVAL, flush)
    return writer


def run(args: argparse.Namespace) -> int:
    from mnet.cli.errors import CliError
    from nicdev.net.control import ControlHandler
    from nicdev.net.control_server import ControlServer
    from nicdev.net.loop import EventLoop
    from nicdev.net.portspec import build_port, parse_port_specs
    from nicdev.net.switch import Switch
    from nicdev.virtio.trace import JsonLinesWriter

    if not args.port:
        raise CliError("no ports: give at least one --port NAME=KIND:ARG (see mnet switch --help)")
    if not args.ageing > 0:
        raise CliError(f"bad --ageing {args.ageing:g}: give a positive number of seconds")
    if not args.stats_interval >= 0:
        raise CliError(f"bad --stats-interval {args.stats_interval:g}: give 0 (off) or a positive number of seconds")
    specs = parse_port_specs(args.port)
    writer = None
    if args.trace:
        try:
            writer = JsonLinesWriter(args.trace)
        except OSError as e:
            raise CliError(f"--trace: {e.strerror}") from None
    loop = EventLoop()
    switch = Switch(loop, ageing=args.ageing)
    if writer is not None:
        switch.add_trace_sink(writer)
    control = None if args.control == "off" else ControlServer(ControlHandler(switch), args.control)
    running = False
    capture = None
    try:
        for spec in specs:
            switch.add_port(build_port(spec))
        if args.pcap:
            capture = start_capture(args.pcap, switch, loop)
        for port in switch.ports.values():
            print(f"port {port.name}: {port.status}", flush=True)
        if control is not None:
            control.start(loop)
            print(f"control socket {control.path}", flush=True)

        def stop(signum, frame):
            loop.stop()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        if args.stats_interval > 0:
            def tick():
                print(switch.summary(), flush=True)
                loop.call_later(args.stats_interval, tick)
            loop.call_later(args.stats_interval, tick)
        print("switch running; Ctrl-C to stop", flush=True)
        running = True
        loop.run()
    finally:
        # After a failed start the error line alone is the output: no table.
        if running:
            for port in list(switch.ports.values()):
                print(f"port {port.name}: {port.status}")
            print(switch.summary())
        if control is not None:
            control.close()
        switch.close()
        if capture is not None:
            capture.close()
            if running:
                print(capture.status)
        loop.close()
        if writer is not None:
            writer.close()
            print(f"trace: {writer.records} records in {writer.path}")
    sys.stdout.flush()
    return 0
