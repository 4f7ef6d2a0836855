"""A small fake QMP server (no QEMU), for the QMP client tests."""
import json
import socket
import threading
import time

GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
                                "package": "fake"}, "capabilities": []}}


class FakeQmp:
    """Serves one QMP client at a time on a unix socket.

    `replies` maps a command name to a function(arguments) returning either
    a return value, an ("error", class, desc) tuple, or the string "close"
    (drop the connection) or "ignore" (never answer). `events_after` maps a
    command to events sent right after its reply.
    """

    def __init__(self, path):
        self.path = str(path)
        self.commands = []
        self.replies = {"query-status": lambda a: {"status": "running", "running": True}}
        self.events_after = {}
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(4)
        # accept() is not interrupted by close() from another thread: poll.
        self._listener.settimeout(0.05)
        self._conn = None
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self._conn = conn
            try:
                self._session(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def send(self, obj):
        self._conn.sendall(json.dumps(obj).encode() + b"\n")

    def event(self, event_name, **data):
        self.send({"event": event_name, "data": data,
                   "timestamp": {"seconds": int(time.time()), "microseconds": 0}})

    def _session(self, conn):
        self.send(GREETING)
        decoder = json.JSONDecoder()
        buf = ""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buf += data.decode()
            while buf.strip():
                buf = buf.lstrip()
                try:
                    msg, end = decoder.raw_decode(buf)
                except ValueError:
                    break
                buf = buf[end:]
                if self._handle(msg) == "close":
                    return

    def _handle(self, msg):
        name, args = msg["execute"], msg.get("arguments", {})
        self.commands.append((name, args))
        reply = {"return": {}} if name == "qmp_capabilities" else None
        if reply is None:
            func = self.replies.get(name, lambda a: {})
            result = func(args)
            if result == "close":
                return "close"
            if result == "ignore":
                return None
            if isinstance(result, tuple) and result[0] == "error":
                reply = {"error": {"class": result[1], "desc": result[2]}}
            else:
                reply = {"return": result}
        if "id" in msg:
            reply["id"] = msg["id"]
        self.send(reply)
        for event in self.events_after.get(name, ()):
            self.event(event[0], **event[1])
        return None

    def close(self):
        self._stop = True
        self._listener.close()
        if self._conn is not None:
            try:
                self._conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
