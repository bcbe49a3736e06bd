"""A raw-socket HTTP/1.1 client for hostile requests: the bytes go out exactly as written
(requests/urllib3 would normalise or refuse them), and every way a server can answer is
reported rather than raised: a parsed response, a close or reset with no status, or silence.

Used by test_hostile.py and test_hostile_auth.py (the corpus is in hostile_corpus.py)."""

import json
import select
import socket
import time
from dataclasses import dataclass, field


@dataclass
class Exchange:
    """What happened on one connection."""
    status: int = None            # None: no status line was received
    reason: str = ""
    headers: dict = field(default_factory=dict)  # lower-cased names; repeated names joined by ", "
    body: bytes = b""
    raw: bytes = b""              # every byte received
    outcome: str = "response"     # response | closed (EOF, no status) | reset | timeout | garbage
    closed_after: bool = None     # after the response: True (EOF/reset), False (still open), None (not checked)
    trailing: bytes = b""         # bytes received after the first response (a second response = smuggling)
    send_error: str = ""          # EPIPE/ECONNRESET while sending (normal when a server refuses early)
    elapsed: float = 0.0

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def describe(self, limit=400):
        if self.status is None:
            return "%s with no status line after %.2fs (received %r%s)" % (
                self.outcome, self.elapsed, self.raw[:limit],
                "; send failed: " + self.send_error if self.send_error else "")
        return "%d %s %r" % (self.status, self.reason, self.body[:limit])


def _parse_head(head):
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return None, "", {}
    status = int(parts[1])
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    headers = {}
    for line in lines[1:]:
        if b":" not in line:
            continue
        k, v = line.split(b":", 1)
        k = k.strip().decode("latin-1").lower()
        v = v.strip().decode("latin-1")
        headers[k] = headers[k] + ", " + v if k in headers else v
    return status, reason, headers


class _Reader:
    def __init__(self, sock, deadline):
        self.sock = sock
        self.deadline = deadline
        self.buf = b""
        self.raw = b""
        self.eof = False
        self.reset = False

    def fill(self):
        """Reads more; False on EOF, reset or timeout (self.eof / self.reset say which)."""
        if self.eof:
            return False
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            self.eof = self.reset = True
            return False
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        self.raw += chunk
        return True


def _read_body(reader, headers, head_only):
    if head_only:
        return b""
    te = headers.get("transfer-encoding", "").lower()
    if "chunked" in te:
        body = b""
        while True:
            while b"\r\n" not in reader.buf:
                if not reader.fill():
                    return body
            line, reader.buf = reader.buf.split(b"\r\n", 1)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            while len(reader.buf) < size + 2:
                if not reader.fill():
                    return body + reader.buf
            body += reader.buf[:size]
            reader.buf = reader.buf[size + 2:]
            if size == 0:
                return body
    if "content-length" in headers:
        n = int(headers["content-length"].split(",")[0])
        while len(reader.buf) < n:
            if not reader.fill():
                break
        body, reader.buf = reader.buf[:n], reader.buf[n:]
        return body
    while reader.fill():  # no framing: the body runs to EOF
        pass
    body, reader.buf = reader.buf, b""
    return body


def exchange(port, parts, timeout=5.0, half_close=False, check_close=False, close_wait=2.0,
             head_only=False, gap=0.0, host="127.0.0.1"):
    """Sends `parts` (bytes, or a list of bytes sent `gap` seconds apart) on a fresh connection
    and reads one response. half_close: shutdown(SHUT_WR) after sending. check_close: then keep
    reading up to `close_wait` seconds to see whether the server closes the connection and
    whether anything (a second response) follows. head_only: the request was HEAD (no body)."""
    if isinstance(parts, (bytes, bytearray)):
        parts = [bytes(parts)]
    ex = Exchange()
    t0 = time.monotonic()
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        answered_early = False
        for i, part in enumerate(parts):
            if i and gap:
                time.sleep(gap)
            try:
                # In pieces, stopping once the server has answered (e.g. a 413 before the body):
                # writing on into a connection it is closing would end in a reset that can
                # discard the answer before it is read.
                for off in range(0, max(len(part), 1), 256 * 1024):
                    sock.sendall(part[off:off + 256 * 1024])
                    if len(part) > 256 * 1024 and select.select([sock], [], [], 0)[0]:
                        answered_early = True
                        break
            except (BrokenPipeError, ConnectionResetError) as e:
                ex.send_error = type(e).__name__
                break
            if answered_early:
                break
        if half_close and not ex.send_error:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        reader = _Reader(sock, t0 + timeout + gap * len(parts))
        try:
            while b"\r\n\r\n" not in reader.buf:
                if not reader.fill():
                    break
        except socket.timeout:
            ex.outcome = "timeout"
        if b"\r\n\r\n" not in reader.buf:
            ex.raw = reader.raw
            if ex.outcome != "timeout":
                ex.outcome = "reset" if reader.reset else ("closed" if not reader.raw else "garbage")
            ex.elapsed = time.monotonic() - t0
            return ex
        head, reader.buf = reader.buf.split(b"\r\n\r\n", 1)
        ex.status, ex.reason, ex.headers = _parse_head(head)
        if ex.status is None:
            ex.outcome = "garbage"
            ex.raw = reader.raw
            ex.elapsed = time.monotonic() - t0
            return ex
        try:
            ex.body = _read_body(reader, ex.headers, head_only or ex.status in (204, 304))
        except socket.timeout:
            ex.outcome = "timeout"
        ex.elapsed = time.monotonic() - t0
        if check_close:
            reader.deadline = time.monotonic() + close_wait
            try:
                while reader.fill():
                    pass
                ex.closed_after = True
            except socket.timeout:
                ex.closed_after = False
            ex.trailing = reader.buf
        ex.raw = reader.raw
        return ex
    finally:
        sock.close()

