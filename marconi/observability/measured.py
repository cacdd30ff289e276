"""
Measuring a store: a proxy that times every L{IMessageStore} call with the
injected clock and reports it to the monitor, and a service that samples
the depth of the deepest queues.
"""

from typing import Any, Callable

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import classImplements

from marconi.core.errors import MarconiError
from marconi.core.interfaces import IMessageStore, IMonitor, IQueueDepths

log = Logger()


class MeasuredStore:
    """
    An L{IMessageStore} that passes every call on to C{store} and reports
    its duration and outcome to C{monitor.storageCall}.  Other attributes
    are the store's own.
    """

    def __init__(
        self, store: IMessageStore, monitor: IMonitor, clock: IReactorTime
    ) -> None:
        self._store = store
        self._monitor = monitor
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _done(self, result: object, operation: str, started: float) -> object:
        self._monitor.storageCall(
            operation,
            self._clock.seconds() - started,
            not isinstance(result, Failure),
        )
        return result


def _measured(operation: str) -> Callable[..., object]:
    def call(self: MeasuredStore, *args: object, **kwargs: object) -> object:
        started = self._clock.seconds()
        try:
            result = getattr(self._store, operation)(*args, **kwargs)
        except Exception:
            self._monitor.storageCall(operation, self._clock.seconds() - started, False)
            raise
        if isinstance(result, Deferred):
            result.addBoth(self._done, operation, started)
        return result

    call.__name__ = operation
    return call


for _name in IMessageStore.names():
    setattr(MeasuredStore, _name, _measured(_name))
classImplements(MeasuredStore, IMessageStore)


class DepthSampler(TimerService):
    """
    Every C{interval} seconds, asks the store (an
    L{marconi.core.interfaces.IQueueDepths}) for the C{limit} deepest queues
    and hands them to the monitor.  A failure is logged and the next run
    goes ahead.
    """

    def __init__(
        self,
        store: IQueueDepths,
        monitor: IMonitor,
        interval: float,
        limit: int,
        clock: IReactorTime,
    ) -> None:
        super().__init__(interval, self.sample)
        self.clock = clock
        self._store = store
        self._monitor = monitor
        self._limit = limit

    def sample(self) -> Deferred:
        async def sample() -> None:
            depths = await self._store.sampleDepths(self.clock.seconds(), self._limit)
            self._monitor.queueDepths(list(depths))

        d = Deferred.fromCoroutine(sample())
        d.addErrback(self._failed)
        return d

    def _failed(self, failure: Failure) -> None:
        if failure.check(MarconiError):
            log.error(
                "Sampling queue depths failed: {error}",
                error=failure.value.description,
            )
        else:
            log.failure("Sampling queue depths failed", failure)
