"""
A blocking facade over L{Client} for scripts.

The reactor runs in a background thread (started on first use, unless it is
already running, and stopped at interpreter exit); each call is sent to it
with L{blockingCallFromThread} and the calling thread waits for the answer.
A Ctrl-C in the calling thread interrupts the wait with L{KeyboardInterrupt}
as usual.  Iterators (paging, following) are driven one step at a time the
same way.

The facade must not be used from the reactor thread itself.
"""

import atexit
import threading
from typing import Any, Awaitable, Callable, Iterator, Optional, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread

from marconi.client.api import Client

T = TypeVar("T")

_lock = threading.Lock()
_thread: Optional[threading.Thread] = None


def _ensureRunning(reactor: Any) -> None:
    """
    Run C{reactor} in a daemon thread unless it runs already.
    """
    global _thread
    with _lock:
        if reactor.running or _thread is not None:
            return
        started = threading.Event()
        reactor.callWhenRunning(started.set)
        _thread = threading.Thread(
            target=reactor.run,
            kwargs={"installSignalHandlers": False},
            name="marconi-reactor",
            daemon=True,
        )
        _thread.start()
        started.wait()
        atexit.register(_stop, reactor, _thread)


def _stop(reactor: Any, thread: threading.Thread) -> None:
    if reactor.running:
        reactor.callFromThread(reactor.stop)
        thread.join(5)


class BlockingClient:
    """
    The calls of L{Client}, blocking.  Takes the same arguments as
    L{Client}; C{client=} wraps an existing one instead.
    """

    def __init__(self, *args: Any, client: Optional[Client] = None, **kw: Any) -> None:
        if client is None:
            from twisted.internet import reactor as default

            self._reactor = kw.get("reactor") or default
            _ensureRunning(self._reactor)
            client = blockingCallFromThread(self._reactor, lambda: Client(*args, **kw))
        else:
            self._reactor = client._reactor
            _ensureRunning(self._reactor)
        self.client = client

    @property
    def clientId(self) -> str:
        return self.client.clientId

    def _call(self, method: Callable[..., Awaitable[T]], *a: Any, **kw: Any) -> T:
        async def run() -> T:
            return await method(*a, **kw)

        return blockingCallFromThread(
            self._reactor, lambda: Deferred.fromCoroutine(run())
        )

    def _iterate(self, make: Callable[[], Any]) -> Iterator[Any]:
        iterator = blockingCallFromThread(self._reactor, make)

        async def step() -> tuple[bool, Any]:
            try:
                return True, await iterator.__anext__()
            except StopAsyncIteration:
                return False, None

        while True:
            more, item = blockingCallFromThread(
                self._reactor, lambda: Deferred.fromCoroutine(step())
            )
            if not more:
                return
            yield item

    def close(self) -> None:
        self._call(self.client.close)

    def __enter__(self) -> "BlockingClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # The calls; see L{Client} for what each does.

    def ping(self) -> bool:
        return self._call(self.client.ping)

    def health(self) -> Any:
        return self._call(self.client.health)

    def listQueues(self, *a: Any, **kw: Any) -> Any:
        return self._call(self.client.listQueues, *a, **kw)

    def queues(self, *a: Any, **kw: Any) -> Iterator[Any]:
        return self._iterate(lambda: self.client.queues(*a, **kw))

    def createQueue(self, *a: Any, **kw: Any) -> bool:
        return self._call(self.client.createQueue, *a, **kw)

    def deleteQueue(self, *a: Any, **kw: Any) -> None:
        return self._call(self.client.deleteQueue, *a, **kw)

    def queueMetadata(self, *a: Any, **kw: Any) -> dict:
        return self._call(self.client.queueMetadata, *a, **kw)

    def patchQueue(self, *a: Any, **kw: Any) -> dict:
        return self._call(self.client.patchQueue, *a, **kw)

    def updateQueueMetadata(self, *a: Any, **kw: Any) -> dict:
        return self._call(self.client.updateQueueMetadata, *a, **kw)

    def queueStats(self, *a: Any, **kw: Any) -> Any:
        return self._call(self.client.queueStats, *a, **kw)

    def post(self, *a: Any, **kw: Any) -> list:
        return self._call(self.client.post, *a, **kw)

    def postBatches(self, *a: Any, **kw: Any) -> Iterator[list]:
        return self._iterate(lambda: self.client.postBatches(*a, **kw))

    def listMessages(self, *a: Any, **kw: Any) -> Any:
        return self._call(self.client.listMessages, *a, **kw)

    def messages(self, *a: Any, **kw: Any) -> Iterator[Any]:
        return self._iterate(lambda: self.client.messages(*a, **kw))

    def getMessage(self, *a: Any, **kw: Any) -> Any:
        return self._call(self.client.getMessage, *a, **kw)

    def getMessages(self, *a: Any, **kw: Any) -> list:
        return self._call(self.client.getMessages, *a, **kw)

    def deleteMessage(self, *a: Any, **kw: Any) -> None:
        return self._call(self.client.deleteMessage, *a, **kw)

    def deleteMessages(self, *a: Any, **kw: Any) -> None:
        return self._call(self.client.deleteMessages, *a, **kw)

    def pop(self, *a: Any, **kw: Any) -> list:
        return self._call(self.client.pop, *a, **kw)

    def claim(self, *a: Any, **kw: Any) -> Any:
        return self._call(self.client.claim, *a, **kw)

    def getClaim(self, *a: Any, **kw: Any) -> Any:
        return self._call(self.client.getClaim, *a, **kw)

    def renewClaim(self, *a: Any, **kw: Any) -> None:
        return self._call(self.client.renewClaim, *a, **kw)

    def releaseClaim(self, *a: Any, **kw: Any) -> None:
        return self._call(self.client.releaseClaim, *a, **kw)

    def readAfter(self, *a: Any, **kw: Any) -> Any:
        return self._call(self.client.readAfter, *a, **kw)

    def follow(self, *a: Any, **kw: Any) -> Iterator[Any]:
        return self._iterate(lambda: self.client.follow(*a, **kw))
