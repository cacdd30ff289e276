"""
Running the real daemon, C{twistd -n marconi}, in a subprocess for
integration tests.

The node listens on port 0 and logs the port it got; the harness reads it
from the node's log file.  Nodes are stopped at the end of the test (with
SIGKILL if SIGTERM is not enough).
"""

import os
import re
import sys
from typing import Any, Optional, Sequence

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = "from twisted.scripts.twistd import run; run()"
_LISTENING = re.compile(r"Marconi listening on tcp:([\d.]+):(\d+)( with TLS)?")


class _Watcher(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred = Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value)


def environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


class NodeProcess:
    """
    One C{twistd -n marconi} process.
    """

    def __init__(
        self,
        testCase: Any,
        directory: str,
        args: Sequence[str],
        prefix: Sequence[str] = (),
    ) -> None:
        """
        @param prefix: a command the daemon is run under, e.g. C{ip netns
            exec NAME}; it must replace itself with the daemon.
        """
        self.testCase = testCase
        self.prefix = list(prefix)
        self.directory = directory
        self.args = list(args)
        self.logPath = os.path.join(directory, "node.log")
        self.url: Optional[str] = None
        self.port: Optional[int] = None
        self._process: Any = None
        self._watcher: Optional[_Watcher] = None

    async def start(self, timeout: float = 30.0) -> "NodeProcess":
        if os.path.exists(self.logPath):
            os.rename(self.logPath, self.logPath + f".{id(self)}.{reactor.seconds()}")
        self._watcher = _Watcher()
        argv = [
            *self.prefix,
            sys.executable,
            "-c",
            TWISTD,
            "-n",
            "--pidfile=",
            f"--logfile={self.logPath}",
            "marconi",
            *self.args,
        ]
        self._process = reactor.spawnProcess(
            self._watcher, argv[0], argv, env=environment(), path=self.directory
        )
        self.testCase.addCleanup(self.stop)
        waited = 0.0
        while waited < timeout:
            if os.path.exists(self.logPath):
                with open(self.logPath, encoding="utf-8", errors="replace") as f:
                    match = _LISTENING.search(f.read())
                if match:
                    self.port = int(match.group(2))
                    scheme = "https" if match.group(3) else "http"
                    self.url = f"{scheme}://{match.group(1)}:{self.port}"
                    return self
            if self._watcher.ended.called:
                break
            await deferLater(reactor, 0.05, lambda: None)
            waited += 0.05
        raise AssertionError(
            f"the node did not start:\n{self.log()}\n{self._watcher.output!r}"
        )

    def log(self) -> str:
        try:
            with open(self.logPath, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    async def stop(self, signal: str = "TERM") -> Any:
        if self._process is None or self._watcher is None:
            return None
        process, watcher = self._process, self._watcher
        self._process = None
        try:
            process.signalProcess(signal)
        except ProcessExitedAlready:
            pass
        killer = reactor.callLater(15, _kill, process)
        reason = await watcher.ended
        if killer.active():
            killer.cancel()
        return reason

    async def kill(self) -> None:
        """
        Kill the node with SIGKILL, as a crash would.
        """
        await self.stop("KILL")

    def signal(self, name: str) -> None:
        """
        Send the node a signal, e.g. C{"HUP"}.
        """
        self._process.signalProcess(name)

    def exitedCleanly(self, reason: Any) -> bool:
        """
        Whether the node shut down in order: it logged its shutdown and
        exited with 0 or by the SIGTERM it was sent (twistd re-raises it).
        """
        ended = isinstance(reason, ProcessDone) or getattr(reason, "signal", None) == 15
        return ended and "Server Shut Down" in self.log()


def _kill(process: Any) -> None:
    try:
        process.signalProcess("KILL")
    except ProcessExitedAlready:
        pass


async def startNode(
    testCase: Any, *extra: str, storage: str = "sqlite::memory:"
) -> NodeProcess:
    """
    Start a node on a free loopback port with C{storage}, in a new temporary
    directory of C{testCase}; C{extra} are more C{twistd marconi} options.
    """
    directory = os.path.abspath(testCase.mktemp())
    os.makedirs(directory)
    args = ["--listen", "tcp:0:interface=127.0.0.1", "--storage", storage, *extra]
    return await NodeProcess(testCase, directory, args).start()
