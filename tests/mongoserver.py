"""
A MongoDB server for the tests, found or started here.

In order of preference:

  1. C{MARCONI_TEST_MONGODB_URI} (for example C{mongodb://127.0.0.1:27017}):
     a server someone else runs; it is used as it is and never restarted.
  2. C{mongod} on C{PATH}: started on a free loopback port in a temporary
     directory.
  3. SecantusDB, the MongoDB-wire-compatible server from PyPI
     (C{pip install secantusdb}): started the same way with
     C{python -m secantus}.

When none of them can run, L{skipReason} says why, and the tests skip.

L{sharedServer} starts one server for the whole test process (the first
test that needs it starts it; it stops when the process exits).  Each test
uses a database of its own, dropped by its cleanup.  L{privateServer}
starts a server only one test uses, for tests that stop and restart it.

Starting a server here blocks until it answers, which is fine in a test's
set-up: it happens before the test's own reactor work begins.
"""

import atexit
import importlib.util
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred

ENVIRONMENT_URI = "MARCONI_TEST_MONGODB_URI"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

_databaseNumbers = itertools.count(1)


def _freePort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _secantusAvailable() -> bool:
    return importlib.util.find_spec("secantus") is not None


def serverKind() -> str | None:
    """
    @return: C{"external"}, C{"mongod"}, C{"secantus"} or L{None}.
    """
    if os.environ.get(ENVIRONMENT_URI):
        return "external"
    if shutil.which("mongod"):
        return "mongod"
    if _secantusAvailable():
        return "secantus"
    return None


def skipReason() -> str | None:
    """
    @return: why no MongoDB server can be had, or L{None} if one can.
    """
    if serverKind() is None:
        return (
            "no MongoDB server: set MARCONI_TEST_MONGODB_URI, put mongod on "
            "PATH, or pip install secantusdb"
        )
    return None


class MongoServer:
    """
    A MongoDB server the tests talk to.

    @ivar host: the loopback address it listens on.
    @ivar port: its port.
    @ivar kind: C{"external"}, C{"mongod"} or C{"secantus"}.
    @ivar canRestart: whether L{stop} and L{start} may be used.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.process: subprocess.Popen | None = None
        self.directory: str | None = None
        self.canRestart = kind != "external"
        self.options = ""
        if kind == "external":
            parts = urlsplit(os.environ[ENVIRONMENT_URI])
            self.host = parts.hostname or "127.0.0.1"
            self.port = parts.port or 27017
            self.options = parts.query
        else:
            self.host = "127.0.0.1"
            self.port = _freePort()

    @property
    def description(self) -> str:
        return f"{self.kind} at {self.host}:{self.port}"

    def _command(self) -> list[str]:
        assert self.directory is not None
        data = os.path.join(self.directory, "data")
        os.makedirs(data, exist_ok=True)
        log = os.path.join(self.directory, "server.log")
        if self.kind == "mongod":
            return [
                shutil.which("mongod") or "mongod",
                "--bind_ip",
                self.host,
                "--port",
                str(self.port),
                "--dbpath",
                data,
                "--logpath",
                log,
                "--nounixsocket",
            ]
        # An empty configuration file keeps SecantusDB from picking up a
        # secantusd.toml from the working or home directory.
        config = os.path.join(self.directory, "secantusd.toml")
        if not os.path.exists(config):
            with open(config, "w"):
                pass
        return [
            sys.executable,
            "-m",
            "secantus",
            "--config",
            config,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--storage-path",
            data,
            "--standalone",
            "--log-level",
            "WARNING",
        ]

    def start(self) -> None:
        """
        Start the server (again, over the same data and port) and wait until
        it accepts connections.
        """
        if self.kind == "external":
            if not _answers(self.host, self.port):
                raise RuntimeError(
                    f"{ENVIRONMENT_URI} names {self.description}, which does not answer"
                )
            return
        if self.process is not None:
            return
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix="marconi-mongo-")
        with open(os.path.join(self.directory, "output.log"), "ab") as output:
            self.process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(
                    f"{self.description} exited at start; see {self.directory}"
                )
            if _answers(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.description} did not answer in {START_TIMEOUT}s")

    def stop(self) -> None:
        """
        Stop the server; its data stays for a later L{start}.
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
        # The port must be free before the server is started again.
        deadline = time.monotonic() + STOP_TIMEOUT
        while _answers(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def destroy(self) -> None:
        """
        Stop the server and remove its data.
        """
        self.stop()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def uri(self, database: str, **options: str) -> str:
        """
        A C{mongodb://} storage URI for C{database} on this server.
        """
        query = [self.options] if self.options else []
        query += [f"{key}={value}" for key, value in options.items()]
        suffix = ("?" + "&".join(query)) if query else ""
        return f"mongodb://{self.host}:{self.port}/{database}{suffix}"

    def newDatabaseName(self) -> str:
        return f"marconi_test_{os.getpid()}_{next(_databaseNumbers)}"


_shared: MongoServer | None = None


def sharedServer() -> MongoServer:
    """
    The server shared by every test of this process, started on first use
    and stopped when the process exits.
    """
    global _shared
    kind = serverKind()
    if kind is None:
        raise RuntimeError(skipReason())
    if _shared is None:
        server = MongoServer(kind)
        server.start()
        atexit.register(server.destroy)
        _shared = server
    return _shared


def privateServer(testCase: Any) -> MongoServer:
    """
    A server of its own for one test (which may stop and restart it),
    destroyed by the test's cleanup.  Tests that need this skip when the
    only server is an external one.
    """
    kind = serverKind()
    if kind is None:
        testCase.skipTest(skipReason())
    if kind == "external":
        kind = "mongod" if shutil.which("mongod") else "secantus"
        if kind == "secantus" and not _secantusAvailable():
            testCase.skipTest("the external MongoDB server cannot be restarted")
    server = MongoServer(kind)
    server.start()
    testCase.addCleanup(server.destroy)
    return server


async def dropDatabase(server: MongoServer, name: str) -> None:
    """
    Drop a test database with a connection of its own.
    """
    from txmongo.connection import ConnectionPool

    pool = ConnectionPool(f"mongodb://{server.host}:{server.port}/", pool_size=1)
    try:
        await pool.drop_database(name)
    finally:
        await pool.disconnect()


def dropDatabaseLater(server: MongoServer, name: str) -> Deferred:
    return Deferred.fromCoroutine(dropDatabase(server, name))
