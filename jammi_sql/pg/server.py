"""``jammi-sql serve``: one database, many PostgreSQL clients (psql, psycopg, BI tools).

The protocol is pg_mimic's; see session.py for what a session is and roles.py for what each
role may do. Here: the server's security before login (loopback unless a password is set,
SCRAM-SHA-256, optional TLS, a capped startup message, a login timeout, a connection cap,
failed logins slowed per address, parallel ones too), cancel requests as DuckDB interrupts,
and a clean stop on SIGTERM (the Database closes, so unfinished jobs are marked interrupted,
as at any exit).
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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
from .audit import Audit
from .dialect import PG_MACROS
from .roles import OWNER, READER, Policy, Role
from .session import JammiConnection, JammiSession

log = logging.getLogger("jammi_sql.pg.server")
logging.getLogger("pg_mimic.auth").setLevel(logging.ERROR)  # Gate logs a failed login, briefly
DEFAULT_HOST, DEFAULT_PORT, DEFAULT_USER = "127.0.0.1", 5433, "jammi"
PASSWORD_ENV = "JAMMI_SERVER_PASSWORD"
READER_PASSWORD_ENV = "JAMMI_READER_PASSWORD"
FAILED_LOGIN_DELAY_S = 1.0  # a first failed login waits this long before its answer
MAX_STARTUP_BYTES = 10_000  # PostgreSQL's cap on the startup message
MAX_LOGIN_MESSAGE_BYTES = 10_000  # any message before login (SCRAM's are ~100 bytes)
MAX_MESSAGE_BYTES = 1 << 30  # after login, as PostgreSQL's 1 GB
AUTH_TIMEOUT_S = 60.0  # PostgreSQL's authentication_timeout
MAX_CONNECTIONS = 100  # PostgreSQL's max_connections
WORKER_THREADS = 64  # statements running at once, across all sessions
TLS_REQUIRED = (
    "jammi: this server requires TLS from clients beyond loopback; connect with sslmode=require"
)


class Shared:
    """What every session shares: the one Database (catalog, job runner, model cache)."""

    def __init__(
        self,
        db: Any,
        readonly: bool,
        policy: Policy | None = None,
        audit: Audit | None = None,
        statement_timeout: float | None = None,
    ):
        import jammi_sql

        self.db, self.readonly = db, readonly
        self.policy = policy or Policy([Role(DEFAULT_USER, OWNER, None, False)], [], readonly)
        self.audit = audit or Audit(None)
        self.statement_timeout = statement_timeout
        self.extensions: list[tuple] = []  # (name, version) DuckDB had loaded at the start
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


@dataclass
class Throttle:
    """Failed logins from one address, and until when their answers are held: each failure
    is answered after the one before it, later by a delay that doubles per failure, so
    guesses sent in parallel are answered in turn as sequential ones are."""

    failures: int = 0
    free_at: float = 0.0  # no answer to this address before then (0: none held)


class Gate(AuthPlugin):
    """A role (``--user`` or ``--reader``), by SCRAM-SHA-256 when it has a password. A
    failure is logged and answered after a delay that doubles with each failure from that
    address (up to 32 s), and never before the failure ahead of it was answered; a success
    is answered once those are (so a right guess among parallel wrong ones is no quicker)
    and resets the count. Logins from an address without failures are not delayed."""

    def __init__(self, server: JammiServer):
        self.server = server

    async def authenticate(self, stream: PgStream, username: str, identities: Any) -> bool:
        server = self.server
        role = server.shared.policy.roles.get(username)
        peer = stream.writer.get_extra_info("peername")
        address = str(peer[0]) if peer else "?"
        inner = ScramSha256AuthPlugin() if role and role.password else TrustAuthPlugin()
        ok = role is not None and await inner.authenticate(stream, username, identities)
        throttle = server.failures.setdefault(address, Throttle())
        if ok:
            await asyncio.sleep(max(0.0, throttle.free_at - time.monotonic()))
            server.failures.pop(address, None)
            stream.authenticated = True  # the login timer lets it be
            server.shared.audit.write("login", address=address, role=username, outcome="ok")
            return True
        throttle.failures += 1
        delay = server.failed_login_delay * 2 ** min(throttle.failures - 1, 5)
        throttle.free_at = max(time.monotonic(), throttle.free_at) + delay
        log.warning(
            "failed login for user %r from %s (%d in a row)", username, address, throttle.failures
        )
        why = "bad password" if role is not None else "no such role"
        server.shared.audit.write("login", address=address, role=username, outcome=why)
        await asyncio.sleep(max(0.0, throttle.free_at - time.monotonic()))
        return False


class CappedStream(PgStream):
    """A PgStream that refuses a message longer than it allows (a startup message over
    10,000 bytes, any message over 10,000 bytes before login), as PostgreSQL does: the
    length is checked before a byte of the body is read."""

    authenticated = False

    async def read_startup_packet(self) -> tuple[int, bytes]:
        header = await self._read_exactly(8)
        length, code = struct.unpack("!ii", header)
        if not 8 <= length <= MAX_STARTUP_BYTES:
            raise Oversized(f"a startup message of {length} bytes (at most {MAX_STARTUP_BYTES})")
        payload = await self._read_exactly(length - 8) if length > 8 else b""
        return code, payload

    async def read_message(self) -> tuple[bytes, bytes]:
        header = await self._read_exactly(5)
        length = struct.unpack("!i", header[1:5])[0]
        limit = MAX_MESSAGE_BYTES if self.authenticated else MAX_LOGIN_MESSAGE_BYTES
        if not 4 <= length <= limit:
            raise Oversized(f"a message of {length} bytes (at most {limit} here)")
        payload = await self._read_exactly(length - 4) if length > 4 else b""
        return header[0:1], payload


class Oversized(ConnectionError):
    """A client sent a message longer than the protocol allows there: the connection ends."""


class JammiServer(PgServer):
    def __init__(self, shared: Shared, tls: Any = None, max_connections: int = MAX_CONNECTIONS):
        roles = shared.policy.roles.values()
        super().__init__(
            session_factory=lambda: JammiSession(shared),
            auth_plugin_factory=lambda username: Gate(self),
            identity_provider=SimpleIdentityProvider({r.name: r.password or "" for r in roles}),
            server_version="16.0",
        )
        self.shared, self.tls, self.max_connections = shared, tls, max_connections
        self.failed_login_delay = FAILED_LOGIN_DELAY_S
        self.auth_timeout = AUTH_TIMEOUT_S
        self.failures: dict[str, Throttle] = {}  # failed logins, by client address
        self.open = 0  # connections open now, logged in or not

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
        stream = CappedStream(reader, writer)
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else "?"
        audit = self.shared.audit
        if self.open >= self.max_connections:
            audit.write("connect", address=address, outcome="too many connections")
            await self._refuse_busy(stream)
            return
        self.open += 1
        # a connection not logged in within auth_timeout is dropped, as PostgreSQL does
        timer = asyncio.get_running_loop().call_later(self.auth_timeout, _expire, stream, audit)
        try:
            await self._serve_client(stream, address)
        finally:
            timer.cancel()
            self.open -= 1

    async def _refuse_busy(self, stream: CappedStream) -> None:
        """Past --max-connections: answer the startup (declining TLS, which the refusal
        needs none of) with PostgreSQL's 53300 error, within a second, and hang up."""
        with contextlib.suppress(ConnectionError, ConnectionClosed, asyncio.TimeoutError):
            async with asyncio.timeout(1.0):
                code, _ = await stream.read_startup_packet()
                if code in (messages.SSL_REQUEST_CODE, messages.GSSENC_REQUEST_CODE):
                    stream.write(b"N")
                    await stream.drain()
                    await stream.read_startup_packet()
                fields = {"S": "FATAL", "V": "FATAL", "C": "53300", "M": TOO_MANY.format(self.open)}
                stream.write(messages.make_error_response(fields))
                await stream.drain()
        stream.writer.close()

    async def _serve_client(self, stream: CappedStream, address: str) -> None:
        try:
            startup = await self._negotiate_startup(stream)
        except Oversized as exc:
            self.shared.audit.write("connect", address=address, outcome=f"refused: {exc}")
            fields = {"S": "FATAL", "V": "FATAL", "C": "08P01", "M": f"jammi: {exc}"}
            stream.write(messages.make_error_response(fields))
            with contextlib.suppress(ConnectionError):
                await stream.drain()
            stream.writer.close()
            return
        except (ConnectionClosed, ssl.SSLError, ConnectionError):
            return
        except Exception:  # garbage where a startup message should be: hang up
            log.info("unreadable startup message from %s", address)
            stream.writer.close()
            return
        if startup is None:
            return
        pid = self._allocate_pid()
        secret = struct.unpack("!i", os.urandom(4))[0]
        connection = JammiConnection(stream, JammiSession(self.shared), self, pid, secret, startup)
        connection.address = address
        self._connections[pid] = connection
        try:
            await connection.run()
        except ConnectionError:  # the client hung up (or sent too much) mid-answer
            pass
        finally:
            self._connections.pop(pid, None)
            if stream.authenticated:
                self.shared.audit.write("disconnect", address=address, role=connection.username)


TOO_MANY = (
    "jammi: sorry, too many clients already ({} connections, the server's --max-connections); "
    "try again when one closes, or ask whoever runs the server to raise --max-connections"
)


def _expire(stream: CappedStream, audit: Audit) -> None:
    if not stream.authenticated:
        peer = stream.writer.get_extra_info("peername")
        audit.write("connect", address=peer[0] if peer else "?", outcome="login timeout")
        stream.writer.transport.abort()


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
        reader: str | None = None,
        reader_password: str | None = None,
        allow_dirs: list[str] | tuple[str, ...] = (),
        trust_clients: bool = False,
        max_connections: int = MAX_CONNECTIONS,
        statement_timeout: float | None = None,
        audit_log: str | None = None,
    ):
        check_exposure(host, password)
        if readonly and not db.read_only:
            raise InvalidArgumentError("--readonly serves a database opened with read_only=True")
        policy = Policy(
            check_roles(user, password, reader, reader_password, trust_clients),
            check_dirs(allow_dirs),
            readonly or db.read_only,
        )
        if max_connections < 1:
            raise InvalidArgumentError(f"--max-connections {max_connections}: give 1 or more")
        if statement_timeout is not None and statement_timeout <= 0:
            raise InvalidArgumentError(
                f"--statement-timeout {statement_timeout}: give seconds above 0 (or leave it out)"
            )
        extensions = db.con.execute(  # before the sandbox, which hides the extension folder
            "SELECT extension_name, extension_version FROM duckdb_extensions() WHERE loaded "
            "ORDER BY 1"
        ).fetchall()
        policy.seal(db)  # DuckDB's file sandbox and locked configuration, for every session
        policy.guard(db.ctx)
        audit = Audit(audit_log)
        self.shared = Shared(db, readonly or db.read_only, policy, audit, statement_timeout)
        self.shared.extensions = extensions
        self.pg = JammiServer(self.shared, tls, max_connections)
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
        self.shared.audit.close()

    def stop(self) -> None:
        if self.loop is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self.close(), self.loop).result(30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


def check_roles(
    user: str,
    password: str | None,
    reader: str | None,
    reader_password: str | None,
    trust_clients: bool,
) -> list[Role]:
    roles = [Role(user, OWNER, password, not trust_clients)]
    if reader is None:
        return roles
    if reader == user:
        raise InvalidArgumentError(f"--reader {reader} is the owner's name too; choose another")
    if not reader_password:
        raise InvalidArgumentError(
            f"--reader {reader} needs a password: --reader-password-file F or "
            f"${READER_PASSWORD_ENV}"
        )
    if not password:
        raise InvalidArgumentError(
            f"--reader {reader} needs the owner to have a password too (--password-file F or "
            f"${PASSWORD_ENV}): without one, anyone who can connect could log in as {user}"
        )
    if trust_clients:
        raise InvalidArgumentError(
            "--trust-clients cannot go with --reader: DuckDB's file sandbox is one for the "
            "whole database, so it cannot be lifted for the owner alone; drop one of them"
        )
    return roles + [Role(reader, READER, reader_password, True)]


def check_dirs(dirs: list[str] | tuple[str, ...]) -> list[str]:
    for folder in dirs:
        if not os.path.isdir(folder):
            raise InvalidArgumentError(f"--allow-dir {folder} is not a folder; give one that is")
    return list(dirs)


def read_password(
    path: str | None, env: str = PASSWORD_ENV, flag: str = "--password-file"
) -> str | None:
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read {flag} {path}: {exc.strerror}") from None
    return os.environ.get(env) or None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jammi-sql serve",
        description="Serve a database over the PostgreSQL wire protocol (psql, psycopg, BI tools).",
    )
    add = parser.add_argument
    add("db", help="database file")
    add("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    add("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    add("--user", default=DEFAULT_USER, help=f"the owner's role name (default {DEFAULT_USER})")
    add("--password-file", metavar="F", help=f"the owner's password (else ${PASSWORD_ENV})")
    add("--reader", metavar="NAME", help="add a reader role: queries and reading functions only")
    add(
        "--reader-password-file",
        metavar="F",
        help=f"the reader's password (else ${READER_PASSWORD_ENV})",
    )
    add(
        "--allow-dir",
        metavar="DIR",
        action="append",
        default=[],
        help="a folder client SQL may read and COPY into (repeatable; default none)",
    )
    add(
        "--trust-clients",
        action="store_true",
        help="no sandbox for the owner: its SQL reaches every file the server's user can",
    )
    add(
        "--max-connections",
        type=int,
        default=MAX_CONNECTIONS,
        metavar="N",
        help=f"connections at once, logged in or not (default {MAX_CONNECTIONS})",
    )
    add(
        "--statement-timeout",
        type=float,
        metavar="S",
        help="cancel a statement after S seconds (default: none)",
    )
    add("--audit-log", metavar="F", help="append logins, refusals and jobs to this file")
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
        reader_password = (
            read_password(args.reader_password_file, READER_PASSWORD_ENV, "--reader-password-file")
            if args.reader
            else None
        )
        check_exposure(args.host, password)
        check_roles(args.user, password, args.reader, reader_password, args.trust_clients)
        check_dirs(args.allow_dir)
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
            reader=args.reader,
            reader_password=reader_password,
            allow_dirs=args.allow_dir,
            trust_clients=args.trust_clients,
            max_connections=args.max_connections,
            statement_timeout=args.statement_timeout,
            audit_log=args.audit_log,
        )
        return asyncio.run(_serve(server, password is not None, tls is not None))
    except InvalidArgumentError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
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
    policy = server.shared.policy
    mode += ", sandboxed" if policy.sandboxed else ", clients trusted with the machine"
    mode += "".join(f", {r.kind} {r.name}" for r in policy.roles.values())
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
