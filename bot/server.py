"""`oncall-bot serve`: HTTP mode on gunicorn (threaded worker), with a graceful SIGTERM.

The worker's event loop reads each request into memory first (however slowly it arrives), so idle
or slow clients cost a socket and a buffer and nothing waits on them. Once its headers and its
Content-Length of body are in, the loop serves it: verify, queue, answer, all bounded once the
request is in memory. (A request thread did that before; Python runs one thread at a time, and the
thread, each time it let go of Python for the database or the socket, waited for the loop's turn
to get it back. In seven runs of bench/ack_latency.py, each next to a run of the threaded way, the
acks' p99 was the smaller multiple of a Bolt app's, served alike, in six: median 1.39x, then 1.33x.)

Bounds: a connection that sends nothing for IDLE_SECONDS is closed; a client that takes none of its
answers for SEND_SECONDS is cut off; a request must arrive whole within READ_SECONDS of its first
byte (else 408); headers past MAX_HEADER_BYTES get 431, a body past the app's MAX_REQUEST_BYTES
413, a chunked body 411; all the requests being read together hold at most MAX_BUFFERED_BYTES
(past it: 503). Each refusal is one log line, without the request.

The gunicorn worker only verifies, queues and acknowledges (bot/app.py); it starts the bot's worker
processes (bot/worker.py), which run the commands, as its children. On SIGTERM gunicorn stops
accepting and finishes the requests in flight (connections that sent nothing yet are closed); then
the worker processes drain (the work running, the outbox) and everything exits well within 10
seconds. Work not started stays queued and messages not sent stay in the outbox, for the next start
or another replica.
"""

from __future__ import annotations

import errno
import gc
import logging
import re
import resource
import selectors
import socket
import struct
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import TConn, ThreadWorker

from bot.app import MAX_REQUEST_BYTES, SlackBot
from bot.jsonlog import JsonFormatter
from bot.worker import WorkerProcesses

SEND_SECONDS = 1                     # an answer is a few hundred bytes: a socket that takes none of it
                                     # for this long belongs to a client that stopped reading
GRACEFUL_SECONDS = 9
DRAIN_SECONDS = 7
IDLE_SECONDS = 5                     # also how long a kept-alive connection may wait for its next request
READ_SECONDS = 10
MAX_HEADER_BYTES = 64 * 1024
MAX_BUFFERED_BYTES = 64 << 20
MAX_CONNECTIONS = 10_000             # fewer when the process may not open that many files
SPARE_FILES = 256                    # files kept for the database, git, probes and logs

_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*(.*?)[ \t]*\r?$", re.I | re.M)
_CHUNKED = re.compile(rb"^transfer-encoding[ \t]*:", re.I | re.M)
_EXPECT_CONTINUE = re.compile(rb"^expect[ \t]*:[ \t]*100-continue[ \t]*\r?$", re.I | re.M)


class JsonLogger(Logger):
    """gunicorn's own lines (boot, signals, worker exits) as JSON too."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())


@dataclass
class _Arriving:
    """A request being read by the event loop."""

    conn: TConn
    deadline: float
    data: bytearray = field(default_factory=bytearray)
    length: int | None = None           # the whole request's length, once its headers are in
    continued: bool = False             # "100 Continue" sent


class DrainingWorker(ThreadWorker):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._arriving: dict[TConn, _Arriving] = {}
        self._buffered = 0
        self._serving = False

    def load_wsgi(self) -> None:
        super().load_wsgi()
        # What start-up made (the app, its features, their libraries) lives as long as the process: out
        # of the collector's reach, a full collection walks only what came since, instead of holding up
        # the requests behind it for 25 ms or more.
        gc.freeze()

    def run(self) -> None:
        super().run()
        server: Server = self.app
        server.workers.stop(DRAIN_SECONDS)

    # -- reading whole requests in the event loop ---------------------------------------------

    def enqueue_req(self, conn: TConn) -> None:
        """Called for a new connection, a kept-alive one that became readable, or one with the next
        request already read ahead: read the request here, and serve it once it is whole."""
        if self._serving:
            # The next request a client sent before the answer to the one just served: its turn comes
            # after what the loop has already seen (one client's requests cannot hold the loop, nor
            # nest one serving in another, however many it sent at once).
            self.method_queue.defer(self.enqueue_req, conn)
            return
        if conn.parser is None:         # a new connection
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_SECONDS, 0))
            ahead = b""
        else:
            ahead = conn.parser.unreader.take_buffered()
        arriving = _Arriving(conn, time.monotonic() + (READ_SECONDS if ahead else IDLE_SECONDS))
        self._arriving[conn] = arriving
        conn.sock.setblocking(False)
        if ahead and self._take(arriving, ahead):
            return
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, arriving))

    def _on_readable(self, arriving: _Arriving, sock: Any) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:                    # the client went away
            self._close(arriving)
            return
        self._take(arriving, data)

    def _take(self, arriving: _Arriving, data: bytes) -> bool:
        """Adds `data`; true once the request went to a thread or was refused."""
        if not arriving.data:
            arriving.deadline = time.monotonic() + READ_SECONDS
        if self._buffered + len(data) > MAX_BUFFERED_BYTES:
            return self._refuse(arriving, "503 Service Unavailable", "too many requests being read at once")
        arriving.data += data
        self._buffered += len(data)
        if arriving.length is None:
            end = arriving.data.find(b"\r\n\r\n")
            if end == -1:
                if len(arriving.data) > MAX_HEADER_BYTES:
                    return self._refuse(arriving, "431 Request Header Fields Too Large", "headers too large")
                return False
            head = bytes(arriving.data[:end])
            if _CHUNKED.search(head):
                return self._refuse(arriving, "411 Length Required", "a chunked body")
            lengths = _CONTENT_LENGTH.findall(head)
            if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
                return self._refuse(arriving, "400 Bad Request", "no valid Content-Length")
            body = int(lengths[0]) if lengths else 0
            if body > MAX_REQUEST_BYTES:
                return self._refuse(arriving, "413 Payload Too Large", f"a body of {body} bytes")
            arriving.length = end + 4 + body
            if body and len(arriving.data) < arriving.length and _EXPECT_CONTINUE.search(head):
                arriving.continued = True
                _send(arriving.conn, b"HTTP/1.1 100 Continue\r\n\r\n")
        if len(arriving.data) < arriving.length:
            return False
        self._serve(arriving)
        return True

    def _serve(self, arriving: _Arriving) -> None:
        """Serves a whole request, then keeps its connection or closes it."""
        conn = arriving.conn
        self._forget(arriving)
        conn.init()                     # the parser, on a blocking socket
        conn.sock.setblocking(True)
        conn.parser.unreader.unread(bytes(arriving.data))
        served: Future[bool] = Future()
        self._serving = True
        try:
            served.set_result(self.handle(conn))
            self.finish_request(conn, served)
        finally:
            self._serving = False

    def _refuse(self, arriving: _Arriving, status: str, reason: str) -> bool:
        self.log.warning("refused a request from %s: %s (%s)", _peer(arriving.conn), status, reason)
        _send(arriving.conn, f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".encode())
        self._close(arriving)
        return True

    def _forget(self, arriving: _Arriving) -> None:
        self._arriving.pop(arriving.conn, None)
        self._buffered -= len(arriving.data)
        try:
            self.poller.unregister(arriving.conn.sock)
        except (KeyError, ValueError, OSError):
            pass                        # never registered: the request was whole on arrival

    def _close(self, arriving: _Arriving) -> None:
        self._forget(arriving)
        self.nr_conns -= 1
        arriving.conn.close()

    def murder_pending(self) -> None:
        """Also closes requests that stopped arriving (408 when they had begun), and, once stopping,
        connections that have not begun one."""
        super().murder_pending()
        now = time.monotonic()
        for arriving in list(self._arriving.values()):
            if arriving.data and now > arriving.deadline:
                self._refuse(arriving, "408 Request Timeout", f"not whole after {READ_SECONDS} s")
            elif not arriving.data and (now > arriving.deadline or not self.alive):
                self._close(arriving)


def _send(conn: TConn, data: bytes) -> None:
    """Best effort, without blocking: the connection is closed next or the client waits for more."""
    try:
        conn.sock.send(data)
    except OSError as error:
        if error.errno not in (errno.EAGAIN, errno.EPIPE, errno.ECONNRESET, errno.EWOULDBLOCK):
            raise


def _peer(conn: TConn) -> str:
    return conn.client[0] if isinstance(conn.client, tuple) else str(conn.client)


def _connection_limit() -> int:
    """As many connections as the process may open files for, less some spare; the soft limit is raised
    to the hard one first (idle clients each hold a socket)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_CONNECTIONS + SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(64, min(MAX_CONNECTIONS, soft - SPARE_FILES))


class Server(BaseApplication):
    def __init__(self, build: Callable[[], SlackBot], host: str, port: int, workers: WorkerProcesses):
        self.build = build
        self.bind = f"{host}:{port}"
        self.workers = workers
        super().__init__()

    def load_config(self) -> None:
        settings = {
            "bind": self.bind,
            "workers": 1,   # one process answers Slack; the bot's worker processes are its children
            "worker_class": "bot.server.DrainingWorker",
            "threads": 1,         # gunicorn's pool for requests, which are served in its loop instead
            "worker_connections": _connection_limit(),
            "graceful_timeout": GRACEFUL_SECONDS,
            "timeout": 30,
            "keepalive": IDLE_SECONDS,
            "logger_class": "bot.server.JsonLogger",
            "errorlog": "-",
            "accesslog": None,
            "loglevel": "info",
            "control_socket_disable": True,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> SlackBot:
        bot = self.build()
        self.workers.start()
        answered = [*(["Slack"] if bot.env.signing_secret else []), *sorted(bot.routes)]
        logging.getLogger(__name__).info("serving %s on %s with %d worker process(es)", ", ".join(answered),
                                         self.bind, self.workers.count)
        return bot
