"""The TLS 1.2 ClientHello busybox 1.35's built-in TLS (ssl_client, wget) sends, built
here with a fresh random, and the few fields of a server's first flight the
tests look at.

busybox offers the renegotiation SCSV, ECDHE-ECDSA/ECDHE-RSA AES-128 (CBC
SHA-256 and GCM) and RSA key exchange AES-128/256; its extensions are
server_name and supported_groups (secp256r1, x25519), and nothing else: no
signature_algorithms (the suites, groups and order are as captured from it).
"""
from __future__ import annotations

import os
import struct

BUSYBOX_SUITES = (0x00FF, 0xC023, 0xC027, 0xC02B, 0xC02F, 0x003C, 0x003D, 0x009C)
BUSYBOX_GROUPS = (0x0017, 0x001D)  # secp256r1, x25519
ECDHE_ECDSA_AES128_GCM_SHA256, ECDHE_RSA_AES128_GCM_SHA256 = 0xC02B, 0xC02F
ECDSA_SHA1, ECDSA_SECP256R1_SHA256 = 0x0203, 0x0403
HANDSHAKE, ALERT = 0x16, 0x15
SERVER_HELLO, SERVER_KEY_EXCHANGE = 2, 12
HANDSHAKE_FAILURE = 40


def _extension(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def _u16_list(values) -> bytes:
    return struct.pack(f"!H{len(values)}H", 2 * len(values), *values)


def client_hello(sni: str, signature_algorithms: tuple[int, ...] = ()) -> bytes:
    """A TLS 1.2 ClientHello record as busybox 1.35 builds it (plus signature_algorithms, if given)."""
    name = sni.encode()
    extensions = _extension(0x0000, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name)  # server_name
    extensions += _extension(0x000A, _u16_list(BUSYBOX_GROUPS))                              # supported_groups
    if signature_algorithms:
        extensions += _extension(0x000D, _u16_list(signature_algorithms))
    body = (b"\x03\x03" + os.urandom(32) + b"\x00" + _u16_list(BUSYBOX_SUITES) + b"\x01\x00"
            + struct.pack("!H", len(extensions)) + extensions)
    message = struct.pack("!B", 1) + len(body).to_bytes(3, "big") + body
    return struct.pack("!BHH", HANDSHAKE, 0x0303, len(message)) + message


def records(data: bytes) -> list[tuple[int, bytes]]:
    """(content type, fragment) of each whole record in ``data``."""
    out = []
    while len(data) >= 5:
        kind, _version, length = struct.unpack("!BHH", data[:5])
        if len(data) < 5 + length:
            break
        out.append((kind, data[5:5 + length]))
        data = data[5 + length:]
    return out


def handshake_messages(data: bytes) -> dict[int, bytes]:
    """A server's first flight: handshake message type -> body."""
    stream = b"".join(body for kind, body in records(data) if kind == HANDSHAKE)
    messages = {}
    while len(stream) >= 4:
        kind, length = stream[0], int.from_bytes(stream[1:4], "big")
        messages[kind] = stream[4:4 + length]
        stream = stream[4 + length:]
    return messages


def chosen_suite(server_hello: bytes) -> int:
    session_id_length = server_hello[34]
    return struct.unpack("!H", server_hello[35 + session_id_length:37 + session_id_length])[0]


def key_exchange_signature(server_key_exchange: bytes) -> tuple[int, int]:
    """(named group, signature algorithm) of an ECDHE ServerKeyExchange."""
    curve_type, group, point_length = struct.unpack("!BHB", server_key_exchange[:4])
    if curve_type != 3:
        raise ValueError(f"not a named-curve ECDHE key exchange (curve type {curve_type})")
    return group, struct.unpack("!H", server_key_exchange[4 + point_length:6 + point_length])[0]
