"""
The health report of a node (C{GET /v2/health}).

Storage reachability comes from the store's C{ping}.  The probe then walks
a message through the store the way a client would -- create a queue, post
a message, list it, claim it, delete it with its claim, delete the queue --
and reports the time of each step, read from the injected clock.  It runs
in a project no client can name (project ids never contain spaces), in a
queue of its own, so it never touches a tenant's data; it goes straight to
the store, so it does not count in the message metrics.

Probes are writes, so concurrent health requests share one running probe
instead of starting one each.
"""

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from marconi.core.errors import MarconiError
from marconi.core.interfaces import IHealth, IMessageStore, INodeStates
from marconi.core.models import ClaimSpec, MessageQuery, NewMessage, newId
from marconi.core.reserved import PROBE_PROJECT

PROBE_CLIENT = "marconi-health-probe"
PROBE_BODY = '{"probe":true}'
PROBE_TTL = 60

log = Logger()


@implementer(INodeStates)
class SingleNode:
    """
    The node states of a node that runs on its own: just itself, up when
    its storage answers.
    """

    def __init__(self, store: IMessageStore, name: str = "local") -> None:
        self._store = store
        self.name = name

    def nodeStates(self) -> Deferred:
        async def states() -> list:
            try:
                up = bool(await self._store.ping())
            except MarconiError:
                up = False
            return [{"name": self.name, "self": True, "state": "up" if up else "down"}]

        return Deferred.fromCoroutine(states())


@implementer(IHealth)
class HealthCheck:
    """
    Reports storage reachability, the state of every node, and the timing
    of a probe through the store.

    @param nodes: what the cluster knows of its nodes; L{SingleNode} by
        default.
    @param cluster: in a cluster, returns the JSON-able description of the
        ring and its nodes reported under C{"cluster"}.
    """

    def __init__(
        self,
        store: IMessageStore,
        clock: Any,
        nodes: Optional[INodeStates] = None,
        cluster: Optional[Callable[[], dict]] = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.nodes = SingleNode(store) if nodes is None else nodes
        self.cluster = cluster
        self._running: Optional[Deferred] = None
        self._waiting: list = []

    def report(self) -> Deferred:
        waiter: Deferred = Deferred()
        self._waiting.append(waiter)
        if self._running is None:
            self._running = Deferred.fromCoroutine(self._report())
            self._running.addBoth(self._deliver)
        return waiter

    def _deliver(self, result: Any) -> None:
        waiting, self._waiting, self._running = self._waiting, [], None
        for waiter in waiting:
            waiter.callback(result)

    async def _report(self) -> tuple:
        doc: dict = {}
        try:
            started = self.clock.seconds()
            reachable = bool(await self.store.ping())
            error = None
        except MarconiError as e:
            reachable, error = False, e.description
        doc["storage_reachable"] = reachable
        ping = {"seconds": self.clock.seconds() - started, "succeeded": reachable}
        status = {"ping": dict(ping, ref=None)}
        probeOK = False
        if reachable:
            probeOK, steps = await self._probe()
            status.update(steps)
        doc["operation_status"] = status
        if error is not None:
            doc["error"] = error
        try:
            nodes = list(await self.nodes.nodeStates())
        except Exception:
            log.failure("Reading the state of the cluster nodes failed")
            nodes = []
        doc["nodes"] = nodes
        problem = None
        if self.cluster is not None:
            doc["cluster"] = self.cluster()
            problem = doc["cluster"].get("unhealthy")
            if problem is not None:
                doc.setdefault("error", problem)
        return reachable and probeOK and problem is None, doc

    def problem(self) -> Optional[str]:
        if self.cluster is None:
            return None
        return self.cluster().get("unhealthy")

    async def _probe(self) -> tuple:
        """
        Walk one message through the store.

        @return: C{(succeeded, steps)}, C{steps} mapping each step's name to
            C{{"seconds", "ref", "succeeded"}}; a step that fails ends the
            walk (its error is its C{ref}), but the queue is removed anyway.
        """
        store, clock = self.store, self.clock
        queue = "probe-" + newId()
        steps: dict = {}
        state: dict = {}

        async def createQueue() -> None:
            await store.createQueue(PROBE_PROJECT, queue, {}, clock.seconds())

        async def postMessages() -> None:
            message = NewMessage(body=PROBE_BODY, ttl=PROBE_TTL)
            ids = await store.postMessages(
                PROBE_PROJECT, queue, [message], PROBE_CLIENT, clock.seconds()
            )
            state["id"] = ids[0]

        async def listMessages() -> None:
            query = MessageQuery(limit=1, clientId=PROBE_CLIENT, echo=True)
            found = await store.listMessages(
                PROBE_PROJECT, queue, query, clock.seconds()
            )
            if [m.id for m in found] != [state["id"]]:
                raise ProbeFailed("the posted message was not listed")

        async def claimMessages() -> None:
            spec = ClaimSpec(ttl=PROBE_TTL, grace=PROBE_TTL, limit=1)
            claim = await store.createClaim(PROBE_PROJECT, queue, spec, clock.seconds())
            if claim is None or [m.id for m in claim.messages] != [state["id"]]:
                raise ProbeFailed("the posted message could not be claimed")
            state["claim"] = claim.id

        async def deleteMessages() -> None:
            await store.deleteMessage(
                PROBE_PROJECT, queue, state["id"], state["claim"], clock.seconds()
            )

        async def deleteQueue() -> None:
            await store.deleteQueue(PROBE_PROJECT, queue)

        walk = [createQueue, postMessages, listMessages, claimMessages, deleteMessages]
        succeeded = True
        for step in walk:
            ok, steps[_stepName(step)] = await _timed(clock, step)
            if not ok:
                succeeded = False
                break
        ok, steps["delete_queue"] = await _timed(clock, deleteQueue)
        return succeeded and ok, steps


class ProbeFailed(Exception):
    """
    The store answered, but not as it should have.
    """


def _stepName(step: Any) -> str:
    names = {
        "createQueue": "create_queue",
        "postMessages": "post_messages",
        "listMessages": "list_messages",
        "claimMessages": "claim_messages",
        "deleteMessages": "delete_messages",
    }
    return names[step.__name__]


async def _timed(clock: Any, step: Any) -> tuple:
    started = clock.seconds()
    try:
        await step()
    except (MarconiError, ProbeFailed) as e:
        ref = getattr(e, "description", None) or str(e)
        return False, {
            "seconds": clock.seconds() - started,
            "ref": ref,
            "succeeded": False,
        }
    return True, {"seconds": clock.seconds() - started, "ref": None, "succeeded": True}
