"""``jammi-sql serve``: one database, many PostgreSQL clients (psql, psycopg, BI tools).

The protocol is pg_mimic's; see wire.py for what a session is. Here: the server's security
(loopback unless a password is set, SCRAM-SHA-256, optional TLS, failed logins logged and
slowed, ``--readonly``), cancel requests as DuckDB interrupts, and a clean stop on SIGTERM
(the Database closes, so unfinished jobs are marked interrupted, as at any exit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import signal
import socket
import ssl
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
from pg_mimic import (
    PgServer,
    ScramSha256AuthPlugin,
    SimpleIdentityProvider,
    TrustAuthPlugin,
    messages,
)
from pg_mimic.auth import AuthPlugin
from pg_mimic.stream import ConnectionClosed, PgStream

from ..defaults import PRECISIONS
from ..errors import InvalidArgumentError, user_message
from .dialect import PG_MACROS
from .session import JammiConnection, JammiSession

log = logging.getLogger("jammi_sql.pg.server")
logging.getLogger("pg_mimic.auth").setLevel(logging.ERROR)  # Gate logs a failed login, briefly
DEFAULT_HOST, DEFAULT_PORT, DEFAULT_USER = "127.0.0.1", 5433, "jammi"
PASSWORD_ENV = "JAMMI_SERVER_PASSWORD"
FAILED_LOGIN_DELAY_S = 1.0  # a first failed login waits this long before its answer
WORKER_THREADS = 64  # statements running at once, across all sessions
TLS_REQUIRED = (
    "jammi: this server requires TLS from clients beyond loopback; connect with sslmode=require"
)


class Shared:
    """What every session shares: the one Database (catalog, job runner, model cache)."""

    def __init__(self, db: Any, readonly: bool):
        import jammi_sql

        self.db, self.readonly = db, readonly
        self.pool = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="jammi-serve")
        self.sessions: set[Any] = set()  # the sessions logged in now
        self.version_text = (
            f"PostgreSQL 16.0 (jammi-sql {jammi_sql.__version__} on DuckDB {duckdb.__version__})"
        )

    def new_cursor(self) -> duckdb.DuckDBPyConnection:
        from ..functions.declarations import macros_sql

        cursor = self.db.con.cursor()  # the UDFs are the database's; TEMP macros per cursor
        cursor.execute(macros_sql(self.db.ctx.suffix) + PG_MACROS)
        return cursor


class Gate(AuthPlugin):
    """Only ``--user``, by SCRAM-SHA-256 when a password is set. A failure is logged and
    answered after a delay that doubles with each failure from that address (up to 32
    times), so guessing is slow; a success resets it."""

    def __init__(self, server: JammiServer):
        self.server = server

    async def authenticate(self, stream: PgStream, username: str, identities: Any) -> bool:
        inner = ScramSha256AuthPlugin() if self.server.password else TrustAuthPlugin()
        ok = username == self.server.user and await inner.authenticate(stream, username, identities)
        peer = stream.writer.get_extra_info("peername")
        address = str(peer[0]) if peer else "?"
        failures = self.server.failures
        if ok:
            failures.pop(address, None)
            return True
        failures[address] = failures.get(address, 0) + 1
        log.warning(
            "failed login for user %r from %s (%d in a row)", username, address, failures[address]
        )
        await asyncio.sleep(self.server.failed_login_delay * 2 ** min(failures[address] - 1, 5))
        return False


class JammiServer(PgServer):
    def __init__(self, shared: Shared, user: str, password: str | None, tls: Any = None):
        super().__init__(
            session_factory=lambda: JammiSession(shared),
            auth_plugin_factory=lambda username: Gate(self),
            identity_provider=SimpleIdentityProvider({user: password or ""}),
            server_version="16.0",
        )
        self.shared, self.user, self.password, self.tls = shared, user, password, tls
        self.failed_login_delay = FAILED_LOGIN_DELAY_S
        self.failures: dict[str, int] = {}  # failed logins in a row, by client address

    def cancel(self, pid: int, secret: int) -> None:
        """psql's Ctrl-C: interrupt that session's running statement (DuckDB stops at its
        next chunk, a jammi call after its current micro-batch); the session goes on."""
        conn = self._connections.get(pid)
        if conn is not None and conn.secret == secret:
            conn.session.interrupt()

    async def _negotiate_startup(self, stream: PgStream) -> dict[str, str] | None:
        code, payload = await stream.read_startup_packet()
        if code == messages.SSL_REQUEST_CODE and self.tls is not None:
            stream.write(b"S")
            await stream.drain()
            await stream.writer.start_tls(self.tls)
            code, payload = await stream.read_startup_packet()
        elif code in (messages.SSL_REQUEST_CODE, messages.GSSENC_REQUEST_CODE):
            stream.write(b"N")
            await stream.drain()
            code, payload = await stream.read_startup_packet()
        if code == messages.CANCEL_REQUEST_CODE:
            self.cancel(*messages.parse_cancel_request(payload))
            await stream.close()
            return None
        if self.tls is not None and stream.writer.get_extra_info("ssl_object") is None:
            peer = stream.writer.get_extra_info("peername")
            if not (peer and is_loopback(peer[0])):  # with TLS on, only loopback may skip it
                fields = {"S": "FATAL", "V": "FATAL", "C": "28000", "M": TLS_REQUIRED}
                stream.write(messages.make_error_response(fields))
                await stream.drain()
                return None
        return messages.parse_startup_message(payload)

    async def _handle_client(self, reader: Any, writer: Any) -> None:
        stream = PgStream(reader, writer)
        try:
            startup = await self._negotiate_startup(stream)
        except (ConnectionClosed, ssl.SSLError, ConnectionError):
            return
        if startup is None:
            return
        pid = self._allocate_pid()
        secret = struct.unpack("!i", os.urandom(4))[0]
        connection = JammiConnection(stream, JammiSession(self.shared), self, pid, secret, startup)
        self._connections[pid] = connection
        try:
            await connection.run()
        except ConnectionError:  # the client hung up while its answer was being sent
            pass
        finally:
            self._connections.pop(pid, None)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            found = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except OSError:
            return False
        return bool(found) and all(ipaddress.ip_address(a).is_loopback for a in found)


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert and not key:
        return None
    if not (cert and key):
        raise InvalidArgumentError("--tls-cert and --tls-key go together; give both files")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgumentError(f"cannot load the TLS certificate or key: {exc}") from None
    return context


def check_exposure(host: str, password: str | None) -> None:
    if not password and not is_loopback(host):
        raise InvalidArgumentError(
            f"refusing to listen on {host} without a password: anyone who can reach it could "
            f"run SQL; set {PASSWORD_ENV} or --password-file, or listen on 127.0.0.1"
        )


class Server:
    """A running server: ``start()`` on a thread of its own (tests, benchmarks), ``stop()``."""

    def __init__(
        self,
        db: Any,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        user: str = DEFAULT_USER,
        password: str | None = None,
        readonly: bool = False,
        tls: ssl.SSLContext | None = None,
    ):
        check_exposure(host, password)
        if readonly and not db.read_only:
            raise InvalidArgumentError("--readonly serves a database opened with read_only=True")
        if readonly:  # clients get no file access; jammi's writing functions refuse anyway
            db.con.execute("SET enable_external_access = false")
        self.shared = Shared(db, readonly or db.read_only)
        self.pg = JammiServer(self.shared, user, password, tls)
        self.host, self.port = host, port
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def listen(self) -> None:
        await self.pg.start_server(self.host, self.port)
        self.port = self.pg.sockets()[0].getsockname()[1]

    def start(self) -> Server:
        ready = threading.Event()
        self.loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.listen())
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name="jammi-serve", daemon=True)
        self._thread.start()
        ready.wait(30)
        return self

    async def close(self) -> None:
        """Stop listening, end every session (an open transaction rolls back) and wait."""
        self.pg.close()
        tasks = [t for t in self.pg._tasks if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        self.shared.pool.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        if self.loop is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self.close(), self.loop).result(30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


def read_password(path: str | None) -> str | None:
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError as exc:
            raise InvalidArgumentError(
                f"cannot read --password-file {path}: {exc.strerror}"
            ) from None
    return os.environ.get(PASSWORD_ENV) or None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jammi-sql serve",
        description="Serve a database over the PostgreSQL wire protocol (psql, psycopg, BI tools).",
    )
    add = parser.add_argument
    add("db", help="database file")
    add("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    add("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    add("--user", default=DEFAULT_USER, help=f"the user clients log in as (default {DEFAULT_USER})")
    add("--password-file", metavar="F", help=f"the password (else ${PASSWORD_ENV})")
    add("--readonly", action="store_true", help="queries only: no writes, no DDL, no file access")
    add("--tls-cert", metavar="F", help="TLS certificate (PEM), with --tls-key")
    add("--tls-key", metavar="F", help="TLS private key (PEM)")
    add(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="inference precision (as the shell's)",
    )
    add("--home", metavar="DIR", help="models and job logs (default: DB.jammi/ or $JAMMI_HOME)")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    import jammi_sql

    try:
        password = read_password(args.password_file)
        check_exposure(args.host, password)
        tls = tls_context(args.tls_cert, args.tls_key)
        check_port(args.host, args.port)  # before the database file is created
        db = jammi_sql.connect(
            args.db, home=args.home, read_only=args.readonly, precision=args.precision
        )
    except Exception as exc:
        print(f"Error: {user_message(exc) or exc}", file=sys.stderr)
        return 2
    try:
        server = Server(
            db,
            host=args.host,
            port=args.port,
            user=args.user,
            password=password,
            readonly=args.readonly,
            tls=tls,
        )
        return asyncio.run(_serve(server, password is not None, tls is not None))
    except OSError as exc:
        print(f"Error: {_cannot_listen(args.host, args.port, exc)}", file=sys.stderr)
        return 1
    finally:
        db.close()  # unfinished jobs are marked interrupted; resume_job continues them


def _cannot_listen(host: str, port: int, exc: OSError) -> str:
    why = exc.strerror or str(exc)
    fix = (
        "another program (another jammi-sql serve?) holds that port: stop it, or choose "
        "another port with --port"
        if exc.errno == errno.EADDRINUSE
        else "check --host and --port"
    )
    return f"jammi: cannot listen on {host}:{port}: {why}; {fix}"


def check_port(host: str, port: int) -> None:
    """Raise ``InvalidArgumentError`` when ``host:port`` cannot be listened on right now."""
    if not 0 <= port <= 65535:
        raise InvalidArgumentError(
            f"--port {port} is not a port; use 0 to 65535 (default {DEFAULT_PORT})"
        )
    try:  # every address, as asyncio binds them, all held until each is bound
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        with contextlib.ExitStack() as held:
            for family, kind, proto, _, address in set(infos):
                probe = held.enter_context(socket.socket(family, kind, proto))
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as exc:
        raise InvalidArgumentError(_cannot_listen(host, port, exc)) from None


async def _serve(server: Server, password: bool, tls: bool) -> int:
    await server.listen()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    auth = "scram-sha-256" if password else "none (loopback only)"
    mode = ", read-only" if server.shared.readonly else ""
    log.info(
        "jammi-sql serve: listening on %s:%s (auth: %s, tls: %s%s); SIGTERM stops it",
        server.host,
        server.port,
        auth,
        "on" if tls else "off",
        mode,
    )
    await stop.wait()
    log.info("jammi-sql serve: stopping")
    await server.close()
    return 0
