"""
Reading the C{[cluster]} section again on C{SIGHUP}.

The certificates of a node are reloaded on the same signal
(L{marconi.tls.TLSReloader}); this handler calls the one installed before
it, so both happen.  A configuration that does not parse, or that changes
what cannot change while the node runs (its name, its secret file's
presence, its storage), is logged and the node keeps its old settings.
"""

import signal
import threading
from typing import Any, Callable, Optional

from twisted.application.service import Service
from twisted.logger import Logger

log = Logger()


class ClusterReloader(Service):
    """
    On C{SIGHUP}, read the configuration again with C{reread()} and give
    its cluster settings to C{apply}.

    @param reread: returns the node's whole configuration read again (a
        L{marconi.config.Config}), or raises L{ValueError} when it is wrong.
    @param apply: takes the new L{marconi.cluster.settings.ClusterConfig}.
    """

    def __init__(
        self,
        reactor: Any,
        reread: Callable[[], Any],
        apply: Callable[[Any], Any],
        signum: Optional[int] = getattr(signal, "SIGHUP", None),
    ) -> None:
        self._reactor = reactor
        self._reread = reread
        self._apply = apply
        self._signum = signum
        self._previous: Any = None
        self._installed = False

    def startService(self) -> None:
        super().startService()
        if (
            self._signum is not None
            and threading.current_thread() is threading.main_thread()
        ):
            self._previous = signal.signal(self._signum, self._onSignal)
            self._installed = True

    def stopService(self) -> Any:
        if self._installed and self._signum is not None:
            signal.signal(self._signum, self._previous)
            self._installed = False
        return super().stopService()

    def _onSignal(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self.reload)
        if callable(self._previous):
            self._previous(signum, frame)

    def reload(self) -> bool:
        """
        Read the configuration again and apply its cluster settings.

        @return: whether they were applied.
        """
        log.info("SIGHUP: reading the cluster configuration again")
        try:
            config = self._reread()
        except ValueError as e:
            log.error(
                "Kept the old cluster configuration: the new one is wrong: {error}",
                error=str(e),
            )
            return False
        if config.cluster is None:
            log.error(
                "Kept the old cluster configuration: the new one has no cluster "
                "nodes (a node cannot leave its cluster this way; give it "
                "weight=0 to drain it)"
            )
            return False
        try:
            self._apply(config.cluster)
        except ValueError as e:
            log.error("Kept the old cluster configuration: {error}", error=str(e))
            return False
        return True
