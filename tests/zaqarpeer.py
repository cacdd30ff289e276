"""
OpenStack Zaqar and Marconi run side by side, for L{tests.zaqar_compare}.

Zaqar is installed from PyPI into a virtualenv per version, built once into
a cache directory outside the repository (C{~/.cache/marconi-tests/zaqar-V},
or under C{$MARCONI_TEST_CACHE}) and reused; it is served by the standard
library's WSGI server over a C{redis-server} started here, with no auth (the
project comes from C{X-Project-ID}) and, for versions that still have it,
the deprecated v1.1 API enabled.  Marconi runs as C{twistd -n marconi} over
SQLite.  Everything listens on 127.0.0.1 only.

These are blocking helpers for a command, not for the reactor.
"""

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Optional

from tests.nodeprocess import ROOT, TWISTD, environment
from tests.redisserver import RedisServer, freePort

#: The Zaqar release of each API version compared: v1.1 from the last one
#: that serves it.
RELEASES = {"v2": "23.0.1", "v1.1": "21.0.3"}
CLIENT = "3381af92-2b9e-11e3-b191-71861300734c"
#: How long a server may take to answer its first ping (seconds).
START_WAIT = 60.0

_SERVE = """
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server
from zaqar.transport.wsgi.app import application

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

make_server("127.0.0.1", int(sys.argv[1]), application, handler_class=Quiet).serve_forever()
"""

_SCHEMA = """
import sys, sqlalchemy
from zaqar.storage.sqlalchemy import tables
tables.metadata.create_all(sqlalchemy.create_engine("sqlite:///" + sys.argv[1]))
"""


def cacheDirectory() -> str:
    return os.environ.get("MARCONI_TEST_CACHE") or os.path.expanduser(
        "~/.cache/marconi-tests"
    )


def virtualenv(release: str, log: Optional[object] = None) -> str:
    """
    The virtualenv of Zaqar C{release}, built on first use (this takes
    minutes) and reused after.

    @return: the virtualenv's directory.
    """
    venv = os.path.join(cacheDirectory(), f"zaqar-{release}")
    marker = os.path.join(venv, ".marconi-installed")
    if os.path.exists(marker):
        return venv
    os.makedirs(cacheDirectory(), exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run(
        [
            os.path.join(venv, "bin", "pip"),
            "install",
            "--quiet",
            f"zaqar=={release}",
            "redis",
        ],
        check=True,
        stdout=log or subprocess.DEVNULL,
    )
    with open(marker, "w") as f:
        f.write(release + "\n")
    return venv


def waitForPing(url: str, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + START_WAIT
    request = urllib.request.Request(
        url, headers={"Client-ID": CLIENT, "X-Project-ID": "ping"}
    )
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(request, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {url} in {START_WAIT} s")


class Server:
    """
    A server process on a loopback port; C{url} is its base.
    """

    process: Optional[subprocess.Popen] = None
    url = ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ZaqarPeer(Server):
    """
    Zaqar C{release} over the Redis server at C{redisPort}.
    """

    def __init__(self, release: str, redisPort: int, directory: str) -> None:
        self.release = release
        self.redisPort = redisPort
        self.directory = directory

    def start(self) -> "ZaqarPeer":
        venv = virtualenv(self.release)
        python = os.path.join(venv, "bin", "python")
        home = os.path.join(self.directory, "home")
        os.makedirs(os.path.join(home, ".zaqar"), exist_ok=True)
        database = os.path.join(self.directory, "management.sqlite")
        subprocess.run([python, "-c", _SCHEMA, database], check=True)
        port = freePort()
        with open(os.path.join(home, ".zaqar", "zaqar.conf"), "w") as f:
            f.write(
                "[DEFAULT]\n"
                "auth_strategy =\n"
                "pooling = False\n"
                "enable_deprecated_api_versions = 1.1\n"
                "[drivers]\n"
                "transport = wsgi\n"
                "message_store = redis\n"
                "management_store = sqlalchemy\n"
                "[drivers:message_store:redis]\n"
                f"uri = redis://127.0.0.1:{self.redisPort}\n"
                "[drivers:management_store:sqlalchemy]\n"
                f"uri = sqlite:///{database}\n"
            )
        env = {"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.log = open(os.path.join(self.directory, "zaqar.log"), "wb")
        self.process = subprocess.Popen(
            [python, "-c", _SERVE, str(port)],
            cwd=self.directory,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{port}"
        waitForPing(self.url + "/v2/ping", self.process, f"Zaqar {self.release}")
        return self

    def stop(self) -> None:
        super().stop()
        if getattr(self, "log", None) is not None:
            self.log.close()


class MarconiNode(Server):
    """
    C{twistd -n marconi} from this checkout, over SQLite.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def start(self) -> "MarconiNode":
        port = freePort()
        self.log = os.path.join(self.directory, "marconi.log")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                TWISTD,
                "-n",
                f"--logfile={self.log}",
                f"--pidfile={os.path.join(self.directory, 'twistd.pid')}",
                "marconi",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--storage",
                f"sqlite:{os.path.join(self.directory, 'marconi.sqlite3')}",
            ],
            cwd=ROOT,
            env=environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{port}"
        waitForPing(self.url + "/v2/ping", self.process, "Marconi")
        return self


class SideBySide:
    """
    A Redis server, Zaqar C{release} over it, and a Marconi node.
    """

    def __init__(self, release: str) -> None:
        self.directory = tempfile.mkdtemp(prefix="marconi-zaqar-")
        self.redis = RedisServer(appendonly=False)
        self.zaqar = ZaqarPeer(release, self.redis.port, self.directory)
        self.marconi = MarconiNode(self.directory)

    def __enter__(self) -> "SideBySide":
        try:
            self.redis.start()
            self.zaqar.start()
            self.marconi.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.marconi.stop()
        self.zaqar.stop()
        self.redis.stop()
