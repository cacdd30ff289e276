"""
A blocking facade over L{Client} for scripts.

The reactor runs in a background thread (started on first use, unless it is
already running, and stopped at interpreter exit); each call is sent to it
with L{blockingCallFromThread} and the calling thread waits for the answer.
A Ctrl-C in the calling thread interrupts the wait with L{KeyboardInterrupt}
as usual.  Iterators (paging, following) are driven one step at a time the
same way.

The methods of L{BlockingClient} are made from those of L{Client}: every
public coroutine method becomes a blocking call, and every method that
returns an asynchronous iterator becomes one that returns a plain
iterator.  Each keeps the signature and the docstring of its L{Client}
original, so C{help(BlockingClient)} documents them.

The facade must not be used from the reactor thread itself.
"""

import atexit
import collections.abc
import functools
import inspect
import threading
import typing
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
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

            # The global reactor provides IReactorFromThreads too, which
            # Twisted's type of it leaves out.
            self._reactor = kw.get("reactor") or cast(IReactorFromThreads, default)
            _ensureRunning(self._reactor)
            client = blockingCallFromThread(self._reactor, lambda: Client(*args, **kw))
        else:
            self._reactor = client._reactor
            _ensureRunning(self._reactor)
        self.client = client

    @property
    def clientId(self) -> str:
        return self.client.clientId

    def _call(self, name: str, *a: Any, **kw: Any) -> Any:
        method = getattr(self.client, name)

        async def run() -> Any:
            return await method(*a, **kw)

        return blockingCallFromThread(
            self._reactor, lambda: Deferred.fromCoroutine(run())
        )

    def _iterate(self, name: str, *a: Any, **kw: Any) -> Iterator[Any]:
        iterator = blockingCallFromThread(
            self._reactor, lambda: getattr(self.client, name)(*a, **kw)
        )

        async def step() -> tuple[bool, Any]:
            try:
                return True, await iterator.__anext__()
            except StopAsyncIteration:
                return False, None

        more: bool
        item: Any
        while True:
            more, item = blockingCallFromThread(
                self._reactor,
                # mypy cannot choose the result type between the two callable
                # forms Twisted accepts when the Deferred's type is known.
                lambda: Deferred.fromCoroutine(step()),  # type: ignore[arg-type]
            )
            if not more:
                return
            yield item

    def __enter__(self) -> "BlockingClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    if TYPE_CHECKING:
        # The twins are set on the class below, one per method of Client.
        def __getattr__(self, name: str) -> Callable[..., Any]: ...


def _yields(original: Callable) -> Optional[Any]:
    """
    What C{original} iterates over, if it returns an asynchronous iterator.
    """
    returns = inspect.signature(original).return_annotation
    if typing.get_origin(returns) is not collections.abc.AsyncIterator:
        return None
    (item,) = typing.get_args(returns)
    return item


def twinNames(cls: type = Client) -> list[str]:
    """
    The public methods of C{cls} that L{BlockingClient} has a twin of: its
    coroutine methods and those that return an asynchronous iterator.
    """
    return [
        name
        for name, value in vars(cls).items()
        if not name.startswith("_")
        and inspect.isfunction(value)
        and (inspect.iscoroutinefunction(value) or _yields(value) is not None)
    ]


def _twin(name: str) -> Callable[..., Any]:
    """
    The blocking twin of L{Client}'s method C{name}, with its signature
    (an asynchronous iterator becoming an L{Iterator}) and docstring.
    """
    original = getattr(Client, name)
    item = _yields(original)
    signature = inspect.signature(original)
    if item is None:

        def twin(self: BlockingClient, *a: Any, **kw: Any) -> Any:
            return self._call(name, *a, **kw)

    else:
        # A type made at run time, for the signature only.
        iterates = Iterator[item]  # type: ignore[valid-type]
        signature = signature.replace(return_annotation=iterates)

        def twin(self: BlockingClient, *a: Any, **kw: Any) -> Any:
            return self._iterate(name, *a, **kw)

    functools.update_wrapper(twin, original)
    del twin.__wrapped__  # type: ignore[attr-defined]
    twin.__module__ = __name__
    twin.__qualname__ = f"BlockingClient.{name}"
    twin.__signature__ = signature  # type: ignore[attr-defined]
    twin.__doc__ = f"The blocking form of L{{Client.{name}}}.\n\n" + (
        inspect.getdoc(original) or ""
    )
    return twin


for _name in twinNames():
    setattr(BlockingClient, _name, _twin(_name))
del _name
