"""`mnet transfer send|receive`: reliable file transfer over UDP, on a MultiOS stack or the host kernel."""
from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from pathlib import Path

from .stack_common import add_stack_arguments, open_stack

DESCRIPTION = """\
Reliable file transfer over UDP (docs/filetransfer.md): sequence numbers,
selective acknowledgements, retransmission on a measured timeout, and the
file's SHA-256 checked by the receiver.

  mnet transfer receive --port PORT --dir DIR --nic vhost-user:PATH --ip ADDR/LEN
  mnet transfer send FILE --to IP:PORT --nic vhost-user:PATH --ip ADDR/LEN

run on a MultiOS stack of their own; with --kernel instead of --nic/--ip
they use the host kernel's UDP sockets (a peer in a namespace, say).
`receive` takes one file, saves it as DIR/NAME once its SHA-256 matches
and exits. Both print a summary on stdout and, for a transfer that takes
more than a second, a progress line on stderr. Exit 0 for a verified
file, 1 when the transfer failed (one line on stderr saying why).
`mnet stack --serve udp-file:PORT,dir=DIR` receives files for as long as
the stack runs.
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    add_stack_arguments(p, required=False)
    p.add_argument("--kernel", action="store_true", help="use the host kernel's UDP sockets instead of a stack")
    p.add_argument("--window", type=int, metavar="CHUNKS", help="chunks in flight (default 256)")
    p.add_argument("--give-up", type=float, metavar="SECONDS", help="fail after this long without progress (default 30)")
    p.add_argument("--quiet", action="store_true", help="no progress line")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="transfer_command", metavar="ACTION")
    send = sub.add_parser("send", help="send FILE to a receiver")
    send.add_argument("file", help="the file to send")
    send.add_argument("--to", required=True, metavar="IP:PORT", help="the receiver")
    send.add_argument("--name", help="the name the receiver saves it under (default: the file's own)")
    send.add_argument("--chunk", type=int, metavar="BYTES", help="bytes of file per datagram (default 1400, at most 1456)")
    _add_common(send)
    receive = sub.add_parser("receive", help="receive one file into DIR")
    receive.add_argument("--port", type=int, required=True, help="the UDP port to listen on (0: a free one, printed)")
    receive.add_argument("--dir", required=True, help="where the file is saved")
    receive.add_argument("--bind", default="0.0.0.0", metavar="ADDR", help="with --kernel: the address to bind")
    _add_common(receive)


def run(args: argparse.Namespace) -> int:
    from mnet.cli.errors import CliError

    action = getattr(args, "transfer_command", None)
    if action not in ("send", "receive"):
        raise CliError("give an action: mnet transfer send FILE --to IP:PORT ... or mnet transfer receive --port PORT --dir DIR ...")
    if args.kernel == bool(args.nic or args.ip):
        raise CliError("give either --nic vhost-user:PATH --ip ADDR/LEN (a MultiOS stack) or --kernel")
    if not args.kernel and not (args.nic and args.ip):
        raise CliError("a stack needs both --nic vhost-user:PATH and --ip ADDR/LEN")
    config = _config(args)
    if action == "send":
        peer = _peer(args.to)
        if not Path(args.file).is_file():
            raise CliError(f"cannot send '{args.file}': not a readable file")
        return _with_endpoint(args, 0, lambda endpoint: _send(args, endpoint, peer, config))
    if not 0 <= args.port <= 65535:
        raise CliError(f"bad --port {args.port}: expected 1..65535 (0: any free port, printed)")
    if not Path(args.dir).is_dir():
        raise CliError(f"bad --dir '{args.dir}': not a directory")
    return _with_endpoint(args, args.port, lambda endpoint: _receive(args, endpoint, config))


def _config(args: argparse.Namespace):
    from mnet.apps.filetransfer.config import TransferConfig
    from mnet.cli.errors import CliError

    given = {"window": args.window, "give_up": args.give_up, "chunk_size": getattr(args, "chunk", None)}
    try:
        return TransferConfig(**{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        raise CliError(f"bad option: {exc}") from None


def _peer(text: str) -> tuple[str, int]:
    from mnet.cli.errors import CliError

    host, sep, port = text.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not 0 < number <= 65535:
        raise CliError(f"bad --to '{text}': expected IP:PORT, e.g. 10.0.0.254:6969")
    return host, number


def _with_endpoint(args: argparse.Namespace, port: int, body) -> int:
    """Open the endpoint (a kernel socket, or a stack of our own and its socket), run ``body``, close."""
    from mnet.apps.filetransfer.endpoints import KernelEndpoint, StackEndpoint
    from mnet.cli.errors import CliError

    stack = nic = endpoint = None
    try:
        if args.kernel:
            endpoint = KernelEndpoint((getattr(args, "bind", "0.0.0.0"), port))
        else:
            stack, nic = open_stack(args)
            endpoint = StackEndpoint(stack, port)
    except OSError as exc:
        if stack is not None:
            stack.stop()
            nic.close()
        raise CliError(f"cannot open UDP port {port}: {exc.strerror or exc}", status=1) from None
    try:
        return body(endpoint)
    finally:
        endpoint.close()
        if stack is not None:
            stack.stop()
            nic.close()


def _send(args: argparse.Namespace, endpoint, peer, config) -> int:
    from mnet.apps.filetransfer.endpoints import NothingListens
    from mnet.apps.filetransfer.report import Progress, send_summary
    from mnet.apps.filetransfer.transfer import TransferError, send_file
    from mnet.cli.errors import CliError

    bar = Progress(sys.stderr)
    started = time.monotonic()

    def progress(sender, now: float) -> None:
        if not args.quiet:
            bar.show(f"sending {sender.name}", sender.acked_bytes, sender.size,
                     f"{sender.counters['retransmitted']} retransmitted", started, now)

    try:
        result = send_file(endpoint, args.file, peer, config, name=args.name, progress=progress)
    except (TransferError, NothingListens, ValueError) as exc:
        raise CliError(str(exc), status=1) from None
    except OSError as exc:  # the file unreadable, the network gone
        raise CliError(f"sending {args.file} failed: {exc.strerror or exc}", status=1) from None
    finally:
        bar.end()
    print(send_summary(result), flush=True)
    return 0


def _receive(args: argparse.Namespace, endpoint, config) -> int:
    from mnet.apps.filetransfer.report import Progress, receive_summary
    from mnet.apps.filetransfer.transfer import receive_files
    from mnet.cli.errors import CliError

    host, port = endpoint.local
    where = args.ip.partition("/")[0] if args.ip else host
    print(f"listening on {where}:{port}, saving into {args.dir}", flush=True)
    bar = Progress(sys.stderr)

    def progress(hub, now: float) -> None:
        for session in hub.sessions.values():
            if not args.quiet:
                bar.show(f"receiving {session.name}", session.delivered, session.size,
                         f"{session.counters['duplicates']} duplicates", session.started_at, now)

    try:
        results = receive_files(endpoint, args.dir, config, once=True, progress=progress)
    except OSError as exc:  # the network gone (the stack stopped)
        raise CliError(f"receiving failed: {exc.strerror or exc}", status=1) from None
    finally:
        bar.end()
    result = results[0]
    if not result.ok:
        raise CliError(receive_summary(result), status=1)
    print(receive_summary(result), flush=True)
    return 0
