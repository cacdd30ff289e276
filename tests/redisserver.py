"""
A real C{redis-server} for the tests: on a free loopback port (and a Unix
socket), with its data and append-only file in a temporary directory.

L{sharedServer} gives one server per test run (module-level, started on
first use) that tests empty with L{RedisServer.flush}; tests that stop or
reconfigure a server make their own L{RedisServer} and register its
L{RedisServer.stop} as a cleanup.  L{SentinelGroup} runs a primary, its
replicas and three Sentinels watching them, for failover tests.  A server dies with the test process even
when that process is killed (the child asks Linux to send it SIGTERM when
its parent goes away), and is stopped at interpreter exit otherwise.

Starting and stopping are blocking calls of a few milliseconds, made from
test set-up and clean-up, never from the code under test.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Optional

SERVER_NAME = "redis-server"

#: How long start and stop wait for the server (seconds, wall clock).
WAIT = 10.0


def findServer() -> Optional[str]:
    """
    The path of C{redis-server}, or L{None} when it is not installed.
    """
    return shutil.which(SERVER_NAME) or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )


def skipReason() -> Optional[str]:
    """
    Why Redis tests cannot run here, or L{None}; for C{skip} attributes.
    """
    if findServer() is None:
        return f"{SERVER_NAME} is not on PATH; install redis-server to run these tests"
    try:
        import txredisapi  # noqa: F401
    except ImportError:
        return "txredisapi is not installed (pip install marconi[redis])"
    return None


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dieWithParent() -> None:
    # PR_SET_PDEATHSIG = 1: the child gets SIGTERM when the test process
    # dies, so a crashed or killed test run leaves no server behind.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)
    except OSError:
        pass


def command(address: object, *args: str, timeout: float = 2.0) -> bytes:
    """
    Send one command to a server with a plain blocking socket and return
    the raw reply (enough for PING, FLUSHALL, CONFIG SET and the like).

    @param address: C{(host, port)} or a Unix socket path.
    """
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(address)
        payload = b"*%d\r\n" % len(args)
        for arg in args:
            data = arg.encode("utf-8")
            payload += b"$%d\r\n%s\r\n" % (len(data), data)
        s.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


class RedisServer:
    """
    One C{redis-server} process and its directory.

    @ivar port: the TCP port on 127.0.0.1.
    @ivar socketPath: the Unix socket.
    """

    def __init__(
        self,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        extraArgs: tuple[str, ...] = (),
        replicaOf: Optional[int] = None,
    ) -> None:
        path = findServer()
        if path is None:
            raise RuntimeError(f"{SERVER_NAME} is not installed")
        self.executable = path
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extraArgs = extraArgs
        self.replicaOf = replicaOf
        self.directory = tempfile.mkdtemp(prefix="marconi-redis-")
        self.socketPath = os.path.join(self.directory, "redis.sock")
        self.port = freePort()
        self.process: Optional[subprocess.Popen] = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def uri(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def unixURI(self, db: int = 0) -> str:
        return f"redis+unix://{self.socketPath}?db={db}"

    def arguments(self) -> list[str]:
        """
        The command line of the server.
        """
        replica = ["--replicaof", "127.0.0.1", str(self.replicaOf)]
        return [
            self.executable,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--unixsocket",
            self.socketPath,
            "--unixsocketperm",
            "700",
            "--dir",
            self.directory,
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            os.path.join(self.directory, "redis.log"),
            "--protected-mode",
            "yes",
            *(replica if self.replicaOf is not None else []),
            *self.extraArgs,
        ]

    def start(self) -> "RedisServer":
        """
        Start the server (again, over the same files) and wait until it
        answers PING.
        """
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(
            self.arguments(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_dieWithParent,
        )
        deadline = time.monotonic() + WAIT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{SERVER_NAME} exited with {self.process.returncode}; "
                    f"see {self.directory}/redis.log"
                )
            try:
                if command(self.address, "PING").startswith(b"+PONG"):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{SERVER_NAME} did not answer in {WAIT}s")
            time.sleep(0.01)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """
        Kill the server process (by default without letting it save
        anything: what survives is what the append-only file had).
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(WAIT)

    def restart(self) -> None:
        """
        Kill the server hard and start it again over the same files.
        """
        self.kill()
        self.start()

    def flush(self) -> None:
        """
        Remove every key of every database.
        """
        reply = command(self.address, "FLUSHALL")
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL failed: {reply!r}")

    def stop(self) -> None:
        """
        Stop the server and remove its directory.
        """
        self.kill(signal.SIGTERM)
        shutil.rmtree(self.directory, ignore_errors=True)


_shared: Optional[RedisServer] = None


def sharedServer() -> RedisServer:
    """
    The server shared by the tests of this run, started on first use,
    running with C{appendonly yes}; it is stopped when the process exits.
    """
    global _shared
    if _shared is None:
        server = RedisServer()
        atexit.register(server.stop)
        _shared = server
    return _shared.start()


def info(address: object, section: str) -> str:
    """
    The text of C{INFO section} of a server (or Sentinel).
    """
    reply = command(address, "INFO", section)
    header, _, body = reply.partition(b"\r\n")
    length = int(header[1:])
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    if len(body) < length:
        # command() stops at the first CRLF; ask again and read it all.
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(address)
            s.sendall(b"INFO %s\r\n" % section.encode())
            data = b""
            while len(data) < len(header) + 2 + length:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            body = data.partition(b"\r\n")[2]
    return body[:length].decode("utf-8")


class SentinelServer(RedisServer):
    """
    A C{redis-server --sentinel} watching one primary, with short delays
    so that a failover takes a few seconds.
    """

    def __init__(self, master: str, primaryPort: int, quorum: int = 2) -> None:
        super().__init__()
        self.config = os.path.join(self.directory, "sentinel.conf")
        with open(self.config, "w", encoding="utf-8") as f:
            f.write(
                f"port {self.port}\n"
                "bind 127.0.0.1\n"
                f"dir {self.directory}\n"
                f"logfile {os.path.join(self.directory, 'sentinel.log')}\n"
                f"sentinel monitor {master} 127.0.0.1 {primaryPort} {quorum}\n"
                f"sentinel down-after-milliseconds {master} 1000\n"
                f"sentinel failover-timeout {master} 4000\n"
                f"sentinel parallel-syncs {master} 2\n"
            )

    def arguments(self) -> list[str]:
        return [self.executable, self.config, "--sentinel"]


class SentinelGroup:
    """
    A primary (append-only file, fsync every second), C{replicas} replicas
    and three Sentinels with a quorum of two, on free loopback ports.
    """

    MASTER = "marconi"

    def __init__(self, replicas: int = 2) -> None:
        self.primary = RedisServer()
        self.replicas = [
            RedisServer(replicaOf=self.primary.port) for _ in range(replicas)
        ]
        self.sentinels = [
            SentinelServer(self.MASTER, self.primary.port) for _ in range(3)
        ]

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    def uri(self, db: int = 0, query: str = "") -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.MASTER}/{db}{query}"

    def start(self) -> "SentinelGroup":
        """
        Start every process and wait until the replicas are in sync and
        every Sentinel knows the replicas and the other Sentinels (only
        then can they agree on a failover).
        """
        for server in [*self.servers, *self.sentinels]:
            server.start()
        want = f"slaves={len(self.replicas)},sentinels={len(self.sentinels)}"
        self._until(
            lambda: (
                all(want in info(s.address, "sentinel") for s in self.sentinels)
                and info(self.primary.address, "replication").count("state=online")
                == len(self.replicas)
            ),
            "the Sentinels and replicas to see each other",
        )
        return self

    def primaryPort(self) -> Optional[int]:
        """
        The port of the primary as the first Sentinel that answers names it.
        """
        for sentinel in self.sentinels:
            try:
                text = info(sentinel.address, "sentinel")
            except OSError:
                continue
            for part in text.split(","):
                if part.startswith("address="):
                    return int(part.rsplit(":", 1)[1])
        return None

    def _until(self, condition, what: str, wait: float = 30.0) -> None:
        deadline = time.monotonic() + wait
        while True:
            try:
                if condition():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.stop()
