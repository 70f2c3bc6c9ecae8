"""A small TCP key-value store: rendezvous and control plane of GPU jobs started without MPI.

:func:`loom.distributed.launch` hosts a :class:`StoreServer` for the processes it starts
(or rank 0 hosts one, for jobs started by hand). Each rank connects with a
:class:`StoreClient`; :class:`StoreControlPlane` keeps the job's out-of-band state in it:

* ``failed/<rank>`` — that rank's error text; ``closed/<rank>`` — it left the job;
* ``events`` — a counter bumped by every such message (one cheap request per poll);
* ``broadcast/<n>`` — the n-th small broadcast (the NCCL unique id);
* ``vote/<rank>`` — ``b"1"`` when the rank leaves after a failure, ``b"0"`` otherwise.

Every write is set-if-absent and every counter an atomic add, so the launcher can write
the entries of a process that died without writing them itself (killed, segfault)
without racing with it. The wire format is length-prefixed binary
(``[op u8][key len u32][value len u32][key][value]`` → ``[status u8][len u32][value]``);
the first request of a connection must carry the job's token. Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import hmac
import socket
import socketserver
import struct
import threading
import time
from typing import Any

from loom.backend.distributed.base import CLOSED, FAILED, ControlPlane, PeerEvent, Pending
from loom.errors import DistributedError

__all__ = ["StoreClient", "StoreControlPlane", "StoreServer", "parse_address"]

_HELLO, _SET, _SETNX, _GET, _ADD, _ITEMS = range(1, 7)
_REQUEST = struct.Struct("<BII")
_REPLY = struct.Struct("<BI")
_COUNTER = struct.Struct("<q")
_MAX_KEY, _MAX_VALUE = 4096, 1 << 20


def parse_address(text: str, name: str = "LOOM_STORE") -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; :class:`~loom.errors.ConfigError` naming ``name`` otherwise."""
    from loom.errors import ConfigError

    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}: expected 'host:port' with a port in 1..65535, got {text!r}")
    return host.strip("[]"), int(port)


class _Table:
    """The store's data: bytes by key, behind a lock."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def apply(self, op: int, key: str, value: bytes) -> tuple[int, bytes]:
        with self.lock:
            data = self.data
            if op == _SET:
                data[key] = value
                return 1, b""
            if op == _SETNX:
                if key in data:
                    return 0, b""
                data[key] = value
                return 1, b""
            if op == _GET:
                return (1, data[key]) if key in data else (0, b"")
            if op == _ADD:
                total = (_COUNTER.unpack(data[key])[0] if key in data else 0) + _COUNTER.unpack(value)[0]
                data[key] = _COUNTER.pack(total)
                return 1, data[key]
            if op == _ITEMS:
                parts = [
                    struct.pack("<II", len(k.encode()), len(v)) + k.encode() + v
                    for k, v in sorted(data.items())
                    if k.startswith(key)
                ]
                return 1, struct.pack("<I", len(parts)) + b"".join(parts)
        return 0, b""


def _read_exact(stream: Any, size: int) -> bytes:
    data = stream.read(size) if hasattr(stream, "read") else _recv_exact(stream, size)
    if len(data) != size:
        raise ConnectionError("the connection closed mid-message")
    return data


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        authenticated = False
        with contextlib.suppress(ConnectionError, OSError, struct.error, UnicodeDecodeError):
            while True:
                header = self.rfile.read(_REQUEST.size)
                if len(header) < _REQUEST.size:
                    return
                op, key_len, value_len = _REQUEST.unpack(header)
                if key_len > _MAX_KEY or value_len > _MAX_VALUE:
                    return  # not a loom client: drop the connection
                key = _read_exact(self.rfile, key_len).decode("utf-8")
                value = _read_exact(self.rfile, value_len)
                if not authenticated:
                    authenticated = op == _HELLO and hmac.compare_digest(value, self.server.token)
                    self.wfile.write(_REPLY.pack(int(authenticated), 0))
                    if not authenticated:
                        return
                    continue
                status, reply = self.server.table.apply(op, key, value)
                self.wfile.write(_REPLY.pack(status, len(reply)) + reply)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    table: _Table
    token: bytes


class StoreServer:
    """The store, served from a background thread of this process.

    Parameters
    ----------
    host : str
        Address to listen on (``"127.0.0.1"``: this host only).
    port : int
        Port (0: any free one; read :attr:`port`).
    token : str
        Secret every client must present (the launcher passes it in ``LOOM_STORE_TOKEN``).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str = "") -> None:
        self._server = _Server((host, port), _Handler)
        self._server.table = self.table = _Table()
        self._server.token = token.encode()
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="loom-store", daemon=True)
        self._thread.start()

    def set_if_absent(self, key: str, value: bytes) -> bool:
        """In-process write (the launcher records processes that died)."""
        return self.table.apply(_SETNX, key, value)[0] == 1

    def add(self, key: str, delta: int) -> int:
        return _COUNTER.unpack(self.table.apply(_ADD, key, _COUNTER.pack(delta))[1])[0]

    def get(self, key: str) -> bytes | None:
        status, value = self.table.apply(_GET, key, b"")
        return value if status else None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class StoreClient:
    """A connection to a :class:`StoreServer`; retries connecting until ``connect_timeout``."""

    def __init__(self, host: str, port: int, token: str = "", *, connect_timeout: float = 60.0) -> None:
        self.address = f"{host}:{port}"
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self._sock = socket.create_connection((host, port), timeout=min(5.0, connect_timeout))
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise DistributedError(
                        f"cannot reach the rendezvous store at {self.address} within {connect_timeout:g} s ({exc})"
                    ) from exc
                time.sleep(0.05)
        self._sock.settimeout(max(connect_timeout, 30.0))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._lock = threading.Lock()
        if self._request(_HELLO, "", token.encode())[0] != 1:
            self.close()
            raise DistributedError(f"the rendezvous store at {self.address} refused this process's LOOM_STORE_TOKEN")

    def _request(self, op: int, key: str, value: bytes = b"") -> tuple[int, bytes]:
        raw_key = key.encode("utf-8")
        with self._lock:
            self._sock.sendall(_REQUEST.pack(op, len(raw_key), len(value)) + raw_key + value)
            status, size = _REPLY.unpack(_read_exact(self._sock, _REPLY.size))
            return status, _read_exact(self._sock, size) if size else b""

    def set(self, key: str, value: bytes) -> None:
        self._request(_SET, key, value)

    def set_if_absent(self, key: str, value: bytes) -> bool:
        return self._request(_SETNX, key, value)[0] == 1

    def get(self, key: str) -> bytes | None:
        status, value = self._request(_GET, key)
        return value if status else None

    def add(self, key: str, delta: int) -> int:
        return _COUNTER.unpack(self._request(_ADD, key, _COUNTER.pack(delta))[1])[0]

    def items(self, prefix: str) -> list[tuple[str, bytes]]:
        """Every ``(key, value)`` whose key starts with ``prefix``, sorted by key."""
        _, data = self._request(_ITEMS, prefix)
        (count,), offset, out = struct.unpack_from("<I", data), 4, []
        for _ in range(count):
            key_len, value_len = struct.unpack_from("<II", data, offset)
            offset += 8
            key = data[offset : offset + key_len].decode("utf-8")
            offset += key_len
            out.append((key, data[offset : offset + value_len]))
            offset += value_len
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


class StoreControlPlane(ControlPlane):
    """Failures, departures, broadcasts and the exit vote of one job, kept in a :class:`StoreClient`'s store."""

    def __init__(self, client: StoreClient, rank: int, world_size: int) -> None:
        self._client, self.rank, self.world_size = client, int(rank), int(world_size)
        self._events_seen = 0
        self._known: set[tuple[str, int]] = set()
        self._broadcasts = 0
        self._lost: str | None = None

    def notify(self, kind: str, message: str = "") -> None:
        if self._client.set_if_absent(f"{kind}/{self.rank}", message.encode("utf-8", "replace")[:_MAX_VALUE]):
            self._client.add("events", 1)

    def poll(self) -> list[PeerEvent]:
        if self._lost is not None:
            return []
        try:
            count = self._client.add("events", 0)
            if count == self._events_seen:
                return []
            self._events_seen = count
            events = []
            for kind in (FAILED, CLOSED):
                for key, value in self._client.items(f"{kind}/"):
                    rank = int(key.rpartition("/")[2])
                    if rank != self.rank and (kind, rank) not in self._known:
                        self._known.add((kind, rank))
                        events.append(PeerEvent(kind, rank, value.decode("utf-8", "replace")))
            return events
        except (OSError, ConnectionError, struct.error) as exc:
            self._lost = f"lost the connection to the rendezvous store at {self._client.address} ({exc})"
            return [PeerEvent(FAILED, -1, self._lost)]

    def begin_broadcast_bytes(self, data: bytes | None, root: int, size: int) -> Pending:
        key = f"broadcast/{self._broadcasts}"
        self._broadcasts += 1
        if self.rank == root:
            self._client.set(key, bytes(data or b"")[:size])
            return Pending.done(bytes(data or b"")[:size])
        box: dict[str, bytes] = {}

        def test() -> bool:
            value = self._client.get(key)
            if value is not None:
                box["value"] = value
            return value is not None

        return Pending(test, lambda: box["value"])

    def begin_exit_vote(self, failed: bool) -> Pending:
        self._client.set_if_absent(f"vote/{self.rank}", b"1" if failed else b"0")
        box: dict[str, list[tuple[str, bytes]]] = {}

        def test() -> bool:
            box["votes"] = self._client.items("vote/")
            return len(box["votes"]) >= self.world_size

        return Pending(test, lambda: any(value == b"1" for _, value in box["votes"]))

    def close(self, clean: bool) -> None:
        self._client.close()
