"""
Moving queues between stores when the ring changes.

With a shared network store (every node's C{--storage} the same Redis or
MongoDB, or declared to every node with C{--cluster-store}) nothing moves:
a new ring only changes which node serves the store's queues.  When a
queue's old and new owner keep their queues in different stores (each
node on its own SQLite file, or on its own Redis or MongoDB), the queue is
handed over with its messages, claims (with their expiry times) and
metadata.  The handover uses only the stores' interface
(L{marconi.core.interfaces.IMessageStore.exportQueue}, C{importQueue},
C{dropQueue}, C{heldQueues}), so it works between stores of any kind.

The protocol: the old owner keeps serving, then flips
------------------------------------------------------

Say node O holds queue Q and the new ring gives Q to node N.

 1. O reads the new ring (SIGHUP) and swaps it in at once.  It keeps
    serving Q from its own store: Q is in its I{outgoing} set, recorded in
    its store before anything else happens.  It still tells its peers and
    clients the I{old} ring version.
 2. O announces Q to N (C{POST /v2/_cluster/announce}, signed like a
    forwarded request).  N records "Q is held by O" in its own store (the
    I{incoming} set) and from then on forwards every request for Q to O
    instead of serving it.  Only when every announcement was taken does
    O publish the new ring version.  Until the two rings agree, every node
    that sees a live peer with another ring refuses (503, C{Retry-After})
    the queues the two rings place differently, unless it holds them: so
    no queue is ever served by two nodes, and N never creates Q empty.  A
    node that just started, with a store some peer does not share, waits
    for its peers' first answers before serving any queue, for the same
    reason.
 3. O copies Q: it I{freezes} Q (requests for Q answer 503 with
    C{Retry-After: 1} for the time of the copy) and sends it to N page by
    page (C{POST /v2/_cluster/handover}, each page in parts under a bound
    on request bodies).  N writes each part into its store as it comes,
    the first replacing whatever N held of Q; after the last, N ends its
    incoming entry and answers "imported": N serves Q from that moment.
 4. Only then does O delete its copy of Q, then its outgoing entry, and
    unfreeze: requests for Q reaching O are forwarded to N; a peer that
    forwarded one to O is told where Q is now (a 503 naming N in
    C{X-Marconi-Held-By}) and sends it there once more.

Why the promises hold:

 - I{No message in two live claims}: at any moment exactly one node
   serves Q (O before N's import, N after it) and the store's claims are
   atomic; the frozen window separates the two.  Claims travel with their
   ids and expiry times, so a claim taken on O is still valid on N.
 - I{No acknowledged message lost}: every store call for Q checks the
   freeze when it is issued (L{marconi.cluster.placement.PlacedStore}), and
   the copy is read after the freeze, in store order; so every write
   acknowledged before the freeze is in the copy and none lands in O's
   copy after it.  O's copy is deleted only after N confirmed that its
   import is complete.  Once O sent the last part, N may serve Q even if
   its answer is lost (a timeout under load): Q then stays frozen on O
   (503) until the next announcement says whether N holds it ("have":
   O drops its copy) or not (O serves it again and sends it once more).
   Were O to serve its copy meanwhile, the writes it took would be
   dropped with it.  The same holds for every queue O still had to hand
   over when it restarts, and the drop after a "have" is made frozen.
 - I{Crashes}: the outgoing and incoming sets are kept in each node's
   store (the metadata of a queue of the reserved project
   L{reserved.CLUSTER_PROJECT}).  O killed before N confirmed: O still
   holds Q, frozen until it announces Q again; N, whose incoming entry
   is still there, answers that it does not hold Q, and O sends it again
   from the start (N's first part replaces what it had).  O killed after
   N confirmed: N answers "have" and O deletes its copy.  N killed before
   it ended its incoming entry: Q is still incoming, N never served it,
   and O sends it again.  N ends its incoming entry only after the whole
   queue is written, so N never serves half a queue.
 - I{Upgrades}: an earlier version kept the moves in tables of its SQLite
   store (C{cluster_moves}, C{cluster_state}).  The store turns them into
   the record L{reserved.UPGRADED_MOVES} when it opens the file, dropping
   the tables in the same transaction, and L{Rebalancer} adds that
   record's moves to its own when it starts, then deletes it; the moves
   resume as after a crash (an incoming queue's staged parts are dropped
   with the tables: O sends it again from the start).
 - Markers are the queue's own (its counter moves with it), so a
   consumer's marker keeps working on N.

A write that reaches Q without a request for Q (a message dead-lettered
into Q by a claim on another queue P of the same store) checks the freeze
too (L{marconi.cluster.placement.OwnedStore}): while Q is frozen the claim
on P answers 503 with C{Retry-After: 1} and moves nothing; while only one
of P and Q has been handed over, the claim on P claims without
dead-lettering (the message stays in P, claimable, and is dead-lettered by
a claim once both are in one store).  So no dead-lettered message is ever
written into a copy of Q that is being read or was already dropped.

Draining: a node of weight 0 owns no queue; it hands all it holds over,
then stops (its process exits).
"""

import json
from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from marconi.cluster import signing
from marconi.cluster.errors import NodeUnavailable
from marconi.cluster.forward import pathAndQuery, target
from marconi.cluster.ring import Ring, key
from marconi.core import reserved
from marconi.core.errors import MarconiError, QueueDoesNotExist

log = Logger()

#: The reserved projects (L{marconi.core.reserved}: the health probes',
#: the subscriptions extension's records, this module's own) stay with
#: their node, and so do reserved queues (named C{~...}).
_STAYING = reserved.PROJECTS
#: The largest part of a handover (bytes of JSON), under any node's limit
#: on request bodies.
PART_BYTES = 160 * 1024
#: The messages read from the store at once while a queue is copied.
PAGE_MESSAGES = 200
#: The queues read at once while looking for those to hand over.
SCAN_PAGE = 1000
#: The project named in the signature of handover requests (they act for
#: no tenant; the queue's project is in the body).
_PROJECT = "-"
_OUT, _IN = "out", "in"


def _parts(page: dict) -> list:
    """
    Split an exported page into parts of at most about L{PART_BYTES}: the
    first carries the page's metadata and claims, each its share of the
    messages.
    """
    parts: list = []
    current = dict(page, messages=[])
    size = len(json.dumps(current))
    for message in page["messages"]:
        length = len(json.dumps(message)) + 2
        if current["messages"] and size + length > PART_BYTES:
            parts.append(current)
            current, size = dict(page, claims=[], messages=[]), 100
        current["messages"].append(message)
        size += length
    parts.append(current)
    return parts


def _takeOver(saved: dict, upgraded: dict) -> dict:
    """
    This node's record with the moves of an earlier version's record
    (L{reserved.UPGRADED_MOVES}) added: a queue this node's own record
    names keeps its entry, and so does the ring last published.
    """
    moves = {key(row[0], row[1]): row for row in upgraded.get("moves", [])}
    moves.update((key(row[0], row[1]), row) for row in saved.get("moves", []))
    published = saved.get("published")
    if published is None:
        published = upgraded.get("published")
    return {"moves": list(moves.values()), "published": published}


def _staying(project: str, queue: str) -> bool:
    return project in _STAYING or queue.startswith("~")


class Rebalancer(Service):
    """
    Hands the queues of this node's home store to their new owners when
    the ring changes, when the new owner keeps its queues in another store,
    and takes the queues handed to it (see the module's description).  It
    uses only L{marconi.core.interfaces.IMessageStore}, so it works for
    every driver.

    What it must remember across a restart (the moves in progress, the
    ring last published) is the metadata of a queue of the reserved
    project L{reserved.CLUSTER_PROJECT} in the home store, one queue per
    node.

    @param store: this node's home store.
    """

    def __init__(self, router: Any, store: Any, reactor: Any) -> None:
        self.router = router
        self.store = store
        self.reactor = reactor
        self._running = False
        self._again = False
        self._savedVersion: Optional[str] = None
        #: The moves in progress, by ring key: C{(project, queue,
        #: direction, peer)}, as last saved.
        self._moves: dict = {}
        self._published: Optional[dict] = None
        self._saving = DeferredLock()
        #: Ring keys of queues whose last part was sent without a sure
        #: answer: the new owner may serve them already, so they stay
        #: frozen here until an announcement tells (see L{_handOver}).
        self.inDoubt: set = set()
        self.ready = False
        router.onRingChange = self.kick
        self._guard()

    @property
    def _record(self) -> str:
        return "moves." + self.router.config.nodeName

    def _guard(self) -> None:
        # A node whose store some peer does not share waits for its peers'
        # rings before serving (L{ClusterRouter.awaitPeerRings}).
        self.router.awaitPeerRings = any(
            self.apart(peer.name) for peer in self.router.config.nodes
        )

    def apart(self, node: str) -> bool:
        """
        Whether C{node} keeps its queues in another store than this node:
        a queue that moves between the two is handed over.
        """
        me = self.router.config.nodeName
        stores = self.router.stores
        return node != me and (stores is None or not stores.shared(me, node))

    def startService(self) -> None:
        super().startService()
        Deferred.fromCoroutine(self._start()).addErrback(
            lambda f: log.failure("Reading the moves in progress failed", f)
        )

    async def _read(self, record: str) -> dict:
        try:
            return await self.store.getQueueMetadata(reserved.CLUSTER_PROJECT, record)
        except QueueDoesNotExist:
            return {}

    async def _start(self) -> None:
        saved = await self._read(self._record)
        # The moves an earlier version recorded in tables of its SQLite
        # store, put in a record of their own when the store opened it.
        upgraded = await self._read(reserved.UPGRADED_MOVES)
        if upgraded:
            saved = _takeOver(saved, upgraded)
        published = saved.get("published")
        self._published = published
        self._savedVersion = None if published is None else published.get("version")
        if (
            published is not None
            and published.get("version") != self.router.ring.version
        ):
            # Started with another ring than the one last published (a
            # restart in the middle of a change): keep telling the peers
            # the old one until the moves are announced.
            try:
                self.router.published = Ring.fromDescription(published)
            except ValueError:
                log.warn("The ring last published cannot be read again")
        rows = saved.get("moves", [])
        for project, queue, direction, peer in rows:
            ringKey = key(project, queue)
            self._moves[ringKey] = (project, queue, direction, peer)
            moves = self.router.outgoing if direction == _OUT else self.router.incoming
            moves[ringKey] = peer
            if direction == _OUT:
                # Stopped in the middle of its copy, maybe after the new
                # owner took it: not served here until its owner says.
                self._doubt(ringKey)
        if upgraded:
            # Kept in this node's own record before the old one is deleted:
            # a stop in between takes the same moves over again.
            await self._save()
            await self.store.deleteQueue(
                reserved.CLUSTER_PROJECT, reserved.UPGRADED_MOVES
            )
            log.info(
                "Took over {count} moves recorded by an earlier version",
                count=len(upgraded.get("moves", [])),
            )
        if rows:
            log.info(
                "Resuming the moves of {count} queues interrupted by a stop",
                count=len(rows),
            )
        self.ready = True
        self.kick()

    async def _save(self) -> None:
        """
        Write what must survive a restart (the moves, the ring published)
        to the home store; one write at a time, each of the state as it is
        when the write starts.
        """
        await self._saving.run(lambda: Deferred.fromCoroutine(self._write()))

    async def _write(self) -> None:
        doc = {
            "moves": sorted(list(m) for m in self._moves.values()),
            "published": self._published,
        }
        created = await self.store.createQueue(
            reserved.CLUSTER_PROJECT, self._record, doc, self.reactor.seconds()
        )
        if not created:
            await self.store.setQueueMetadata(
                reserved.CLUSTER_PROJECT, self._record, doc
            )

    async def _exists(self, project: str, queue: str) -> bool:
        return await self.store.exportQueue(project, queue, None, 0) is not None

    async def _held(self) -> list:
        """
        The queues of the home store that may be handed over.
        """
        held: list = []
        after = None
        while True:
            page = await self.store.heldQueues(after, SCAN_PAGE)
            held += [tuple(k) for k in page if not _staying(*k)]
            if len(page) < SCAN_PAGE:
                return held
            after = tuple(page[-1])

    def reconfigure(self, cluster: Any) -> None:
        """
        Take the cluster settings read again on SIGHUP.
        """
        if cluster.nodeName != self.router.config.nodeName:
            raise ValueError("a node's name cannot change while it runs")
        stores = self.router.stores
        if stores is not None:
            stores.reconfigure(cluster)
        self.router.reconfigure(cluster)
        self._guard()
        if self.router.config.draining:
            log.warn("This node has weight 0: it hands all its queues over, then stops")
            self.kick()

    def kick(self) -> None:
        """
        Hand over what the current ring says this node no longer owns, in
        the background; again if it is already doing so.
        """
        if not self.ready:
            return
        if self._running:
            self._again = True
            return
        self._running = True
        Deferred.fromCoroutine(self._loop()).addErrback(
            lambda f: log.failure("Moving queues failed", f)
        )

    async def _loop(self) -> None:
        try:
            while True:
                self._again = False
                try:
                    done = await self._pass()
                except Exception:
                    log.failure("A round of queue moves failed; trying again")
                    done = False
                if self._again:
                    continue
                if done:
                    break
                await deferLater(
                    self.reactor, self.router.config.probeInterval, lambda: None
                )
        finally:
            self._running = False
        if self.router.config.draining and not self.router.outgoing:
            log.warn("Drained: every queue was handed over; stopping")
            self.reactor.stop()

    async def _pass(self) -> bool:
        """
        One round: find the queues to hand over, announce them, copy them.

        @return: whether nothing is left to hand over.
        """
        router = self.router
        ring, me = router.ring, router.config.nodeName
        outgoing: dict = {}
        for project, queue in await self._held():
            ringKey = key(project, queue)
            owner = ring.owner(ringKey)
            if owner != me and ringKey not in router.incoming and self.apart(owner):
                outgoing[ringKey] = (project, queue, owner)
        stale = [k for k in router.incoming if ring.owner(k) != me]
        for k in stale:
            del router.incoming[k]
        self._moves = {
            k: v for k, v in self._moves.items() if v[2] == _IN and k not in stale
        }
        for ringKey, (project, queue, owner) in outgoing.items():
            self._moves[ringKey] = (project, queue, _OUT, owner)
        await self._save()
        router.outgoing = {k: v[2] for k, v in outgoing.items()}
        for ringKey in self.inDoubt - set(outgoing):
            # The ring changed again and gives it back to this node.
            self._settle(ringKey)
        targets: dict = {}
        for project, queue, owner in outgoing.values():
            targets.setdefault(owner, []).append([project, queue])
        for node, queues in targets.items():
            answer = await self._send(
                node, b"announce", {"version": ring.version, "queues": queues}
            )
            if answer is None:
                return False
            have = {key(p, q) for p, q in answer.get("have", [])}
            for project, queue in queues:
                ringKey = key(project, queue)
                if ringKey in have:
                    # Frozen while the copy here is dropped: a write
                    # taken now would be dropped with it.
                    router.frozen.add(ringKey)
                    try:
                        await self._drop(project, queue)
                    finally:
                        self._settle(ringKey)
                elif ringKey in self.inDoubt:
                    # The new owner does not hold it: this copy is the
                    # only one, served again until its handover.
                    self._settle(ringKey)
        if self._savedVersion != ring.version:
            self._published = ring.describe()
            await self._save()
            self._savedVersion = ring.version
        if router.published.version != ring.version:
            router.published = ring
            log.info(
                "Publishing ring {version}; {count} queues to hand over",
                version=ring.version,
                count=len(router.outgoing),
            )
        failed = False
        for ringKey, (project, queue, owner) in outgoing.items():
            if self._again:
                return False
            if ringKey in router.outgoing and not await self._handOver(
                project, queue, owner
            ):
                failed = True
        return not failed and not router.outgoing

    async def _drop(self, project: str, queue: str) -> None:
        """
        Delete this node's copy of a queue its new owner holds, then its
        outgoing entry.
        """
        ringKey = key(project, queue)
        await self.store.dropQueue(project, queue)
        self.router.outgoing.pop(ringKey, None)
        self._moves.pop(ringKey, None)
        await self._save()

    def _doubt(self, ringKey: str) -> None:
        self.inDoubt.add(ringKey)
        self.router.frozen.add(ringKey)

    def _settle(self, ringKey: str) -> None:
        self.inDoubt.discard(ringKey)
        self.router.frozen.discard(ringKey)

    async def _handOver(self, project: str, queue: str, owner: str) -> bool:
        """
        Copy one queue to its new owner, page by page, then drop this
        node's copy.

        Once the last part is sent, the new owner may have imported the
        queue and be serving it even when its answer never came (a
        timeout, a connection lost): the queue then stays frozen here,
        answering 503, until the next announcement says whether the new
        owner holds it.  Serving this copy meanwhile would take writes
        that the drop after a later "have" would lose.
        """
        router = self.router
        ringKey = key(project, queue)
        router.frozen.add(ringKey)
        try:
            after: Optional[int] = None
            index = count = 0
            answer: Optional[dict] = None
            while True:
                page = await self.store.exportQueue(
                    project, queue, after, PAGE_MESSAGES
                )
                if page is None:
                    break
                parts = _parts(page)
                for number, part in enumerate(parts):
                    final = page["next"] is None and number == len(parts) - 1
                    if final:
                        self.inDoubt.add(ringKey)
                    body = {
                        "project": project,
                        "queue": queue,
                        "part": index,
                        "final": final,
                        "page": part,
                    }
                    answer = await self._send(owner, b"handover", body)
                    if answer is None:
                        return False
                    index += 1
                count += len(page["messages"])
                after = page["next"]
                if after is None:
                    break
            if answer is not None and answer.get("result") not in ("imported", "have"):
                return False
            await self._drop(project, queue)
            self.inDoubt.discard(ringKey)
            log.info(
                "Handed queue {queue} of {project} over to {node} ({count} messages)",
                queue=queue,
                project=project,
                node=owner,
                count=count,
            )
            return True
        finally:
            if ringKey not in self.inDoubt:
                router.frozen.discard(ringKey)

    async def _send(self, node: str, action: bytes, body: dict) -> Optional[dict]:
        """
        A signed POST to C{/v2/_cluster/ACTION} of C{node}; its JSON answer,
        or L{None} (logged) when it failed.
        """
        router = self.router
        payload = json.dumps(body).encode()
        path = target(b"/v2/_cluster/" + action)
        signed = router.signer.headers(
            b"POST", pathAndQuery(path), payload, _PROJECT, node
        )
        headers = Headers({b"content-type": [b"application/json"]})
        for name, value in signed.items():
            headers.setRawHeaders(name, [value])
        try:
            answer = await router._call(node, b"POST", path, headers, payload)
            doc = json.loads(answer.body)
        except (NodeUnavailable, ValueError) as e:
            log.warn(
                "Moving queues to node {node}: {action} failed: {error}",
                node=node,
                action=action.decode(),
                error=str(e),
            )
            return None
        if answer.code != 200:
            log.warn(
                "Node {node} refused the {action}: {code} {error}",
                node=node,
                action=action.decode(),
                code=answer.code,
                error=doc.get("description") if isinstance(doc, dict) else doc,
            )
            return None
        return doc

    # The receiving side.

    async def announced(self, sender: str, doc: dict) -> tuple:
        router = self.router
        if not self.ready:
            return 503, _problem("Not ready", "This node takes no queue yet.")
        if doc.get("version") != router.ring.version:
            return 409, _problem(
                "Ring mismatch",
                f"This node routes by ring {router.ring.version}, not "
                f"{doc.get('version')}.",
            )
        me = router.config.nodeName
        queues = [
            (p, q)
            for p, q in doc["queues"]
            if isinstance(p, str)
            and isinstance(q, str)
            and router.ring.owner(key(p, q)) == me
        ]
        have = []
        for project, queue in queues:
            ringKey = key(project, queue)
            # A queue still incoming was not wholly imported (or its end
            # not recorded): it is taken again from the start.
            if ringKey not in router.incoming and await self._exists(project, queue):
                have.append([project, queue])
                continue
            router.incoming[ringKey] = sender
            self._moves[ringKey] = (project, queue, _IN, sender)
        await self._save()
        log.info(
            "Node {node} holds {count} queues of this node until it hands them over",
            node=sender,
            count=len(queues) - len(have),
        )
        return 200, {"have": have}

    async def handedOver(self, sender: str, doc: dict) -> tuple:
        router = self.router
        project, queue = doc["project"], doc["queue"]
        if not isinstance(project, str) or not isinstance(queue, str):
            raise ValueError("the project and the queue must be strings")
        part, final, page = int(doc["part"]), bool(doc["final"]), doc["page"]
        ringKey = key(project, queue)
        if router.ring.owner(ringKey) != router.config.nodeName:
            return 409, _problem("Not the owner", "This node does not own the queue.")
        if router.incoming.get(ringKey) != sender:
            if await self._exists(project, queue):
                return 200, {"result": "have"}
            return 409, _problem("Not announced", "The queue was not announced.")
        await self.store.importQueue(project, queue, page, part == 0)
        if not final:
            return 200, {"result": "staged"}
        self._moves.pop(ringKey, None)
        await self._save()
        router.incoming.pop(ringKey, None)
        log.info(
            "Took queue {queue} of {project} over from {node}",
            queue=queue,
            project=project,
            node=sender,
        )
        return 200, {"result": "imported"}


def _problem(title: str, description: str) -> dict:
    return {"title": title, "description": description}


class HandoverResource(Resource):
    """
    The root of a node's site in a cluster: C{/v2/_cluster/announce} and
    C{/v2/_cluster/handover} take the moves of queues from other nodes;
    every other request goes to C{inner}.  Only requests signed by another
    node of the cluster are taken (L{marconi.cluster.signing}); with a
    cluster listener (mutual TLS), only there (C{nodesOnly} on the public
    site's root answers 404).
    """

    isLeaf = True

    def __init__(self, rebalancer: Rebalancer, inner: Any, nodesOnly: bool) -> None:
        super().__init__()
        self.rebalancer = rebalancer
        self.inner = inner
        self.nodesOnly = nodesOnly

    def render(self, request: Any) -> Any:
        if request.postpath[:2] != [b"v2", b"_cluster"]:
            return self.inner.render(request)
        request.route = "cluster"

        def send(result: tuple) -> None:
            code, doc = result
            body = json.dumps(doc).encode()
            request.setResponseCode(code)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()

        def failed(failure: Any) -> None:
            log.failure("A queue move request failed", failure)
            send((500, _problem("Internal error", "The move failed.")))

        d = Deferred.fromCoroutine(self._serve(request))
        d.addCallbacks(send, failed)
        return NOT_DONE_YET

    async def _serve(self, request: Any) -> tuple:
        action = request.postpath[2:]
        if self.nodesOnly or action not in ([b"announce"], [b"handover"]):
            return 404, _problem("Not found", "The resource could not be found.")
        if request.method != b"POST":
            return 405, _problem("Method not allowed", "Use POST.")
        request.content.seek(0)
        body = request.content.read()
        headers = {
            name.lower(): values[0]
            for name, values in request.requestHeaders.getAllRawHeaders()
            if name.lower().startswith(signing.PREFIX)
        }
        try:
            signed = self.rebalancer.router.verifier.verify(
                request.method, request.uri, body, headers
            )
        except signing.BadSignature as e:
            log.warn("Refused a queue move request: {why}", why=str(e))
            signed = None
        if signed is None:
            return 403, _problem(
                "Forbidden", "Only the nodes of this cluster may move queues."
            )
        try:
            doc = json.loads(body)
            if action == [b"announce"]:
                return await self.rebalancer.announced(signed.node, doc)
            return await self.rebalancer.handedOver(signed.node, doc)
        except (ValueError, KeyError, TypeError) as e:
            return 400, _problem("Bad move request", str(e))
        except MarconiError as e:
            return 503, _problem("Service unavailable", e.description)
