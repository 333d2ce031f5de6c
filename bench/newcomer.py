#!/usr/bin/env python3
"""Is a newcomer still served? The check bench/crowd-soak.sh runs after every crowd.

Client A joins a fresh room and waits for its `welcome`; client B joins the same room and waits for
its own; A draws one segment; B must receive it. Prints one JSON object on stdout:
  {"ok": true, "total_ms": ..., "a_welcome_ms": ..., "b_welcome_ms": ..., "draw_ms": ...}
  {"ok": false, "error": "...", "step": "...", "total_ms": ...}
Exit 0 when B got the draw (however long it took: the caller judges the time), 1 when not.

Standard library only, so that the check depends on nothing the server's own code or the load
generators share: a bug in a common WebSocket library cannot hide a deaf server.

Usage: bench/newcomer.py --port P [--room NAME] [--timeout S]
"""

import argparse
import base64
import json
import os
import socket
import struct
import sys
import time


class Failed(Exception):
    pass


class Client:
    """The few parts of RFC 6455 a newcomer needs: the upgrade, masked text frames, pongs."""

    def __init__(self, port, room, deadline):
        self.deadline = deadline
        self.buf = b""
        remaining = self._remaining()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=remaining)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws/{room} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status + " ":
            raise Failed(f"upgrade refused: {status}")

    def _remaining(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Failed("timed out")
        return left

    def _fill(self):
        self.sock.settimeout(self._remaining())
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise Failed("timed out") from None
        if not chunk:
            raise Failed("connection closed by the server")
        self.buf += chunk

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def messages(self):
        """Yields every JSON message the server sends (a `batch` frame's messages one by one)."""
        text = b""
        while True:
            b0, b1 = self._take(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._take(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._take(8))
            payload = self._take(n)  # the server does not mask
            if opcode == 0x9:
                self.send(0xA, payload)
            elif opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise Failed(f"closed by the server ({code} {payload[2:].decode(errors='replace')})")
            elif opcode in (0x1, 0x0):
                text += payload
                if b0 & 0x80:
                    message = json.loads(text)
                    text = b""
                    if message.get("type") == "batch":
                        yield from message.get("messages", [])
                    else:
                        yield message

    def wait_for(self, kind, match=lambda m: True):
        for message in self.messages():
            if message.get("type") == "error":
                raise Failed(f"error from the server: {message}")
            if message.get("type") == kind and match(message):
                return message

    def close(self):
        try:
            self.send(0x8, struct.pack("!H", 1000))
            self.sock.close()
        except OSError:
            pass


def main():
    parser = argparse.ArgumentParser(description="Is a newcomer pair served?")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--room", default=f"newcomer-{os.getpid()}-{int(time.time() * 1000)}")
    parser.add_argument("--timeout", type=float, default=5.0, help="give up after this many s")
    args = parser.parse_args()

    start = time.monotonic()
    deadline = start + args.timeout
    ms = lambda: round((time.monotonic() - start) * 1000, 1)  # noqa: E731
    result, step, clients = {}, "A joins", []
    try:
        a = Client(args.port, args.room, deadline)
        clients.append(a)
        a.wait_for("welcome")
        result["a_welcome_ms"] = ms()
        step = "B joins"
        b = Client(args.port, args.room, deadline)
        clients.append(b)
        b.wait_for("welcome")
        result["b_welcome_ms"] = ms()
        step = "B gets A's draw"
        # Random coordinates: B must get this draw, not an older one of a reused room.
        x, y = int.from_bytes(os.urandom(2), "big") % 1600, int.from_bytes(os.urandom(2), "big") % 900
        draw = {"type": "draw", "color": "#d03030", "size": 3, "tool": "pen",
                "startX": x, "startY": y, "endX": (x + 7) % 1600, "endY": (y + 5) % 900}
        a.send(0x1, json.dumps(draw).encode())
        b.wait_for("draw", lambda m: m.get("startX") == x and m.get("startY") == y)
        result["draw_ms"] = ms()
        result.update(ok=True, total_ms=ms())
    except (Failed, OSError, ValueError) as error:
        result.update(ok=False, step=step, error=str(error) or type(error).__name__, total_ms=ms())
    finally:
        for client in clients:
            client.close()
    ok = result.pop("ok")
    print(json.dumps({"ok": ok, "total_ms": result.pop("total_ms"), **result}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
