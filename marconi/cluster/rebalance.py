"""
Moving the queues of node-local SQLite stores when the ring changes.

With network stores (Redis, MongoDB) nothing moves: every node opens every
declared store, so a new ring only changes which node serves a store's
queues.  A node whose home store is an SQLite file holds queues no other
node can open; when the ring gives one of them to another node, it is
handed over with its messages, claims (with their expiry times) and
metadata.

The protocol: the old owner keeps serving, then flips
------------------------------------------------------

Say node O holds queue Q and the new ring gives Q to node N.

 1. O reads the new ring (SIGHUP) and swaps it in at once.  It keeps
    serving Q from its own store: Q is in its I{outgoing} set, written to a
    table of its own SQLite file before anything else happens.  It still
    tells its peers and clients the I{old} ring version.
 2. O announces Q to N (C{POST /v2/_cluster/announce}, signed like a
    forwarded request).  N records "Q is held by O" in its own SQLite file
    (the I{incoming} set) and from then on forwards every request for Q to
    O instead of serving it.  Only when every announcement was taken does
    O publish the new ring version.  Until the two rings agree, every node
    that sees a live peer with another ring refuses (503, C{Retry-After})
    the queues the two rings place differently, unless it holds them: so
    no queue is ever served by two nodes, and N never creates Q empty.
 3. O copies Q: it I{freezes} Q (requests for Q answer 503 with
    C{Retry-After: 1} for the time of the copy, milliseconds for a queue
    of thousands of messages), reads Q whole in one SQLite transaction and
    sends it to N in parts (C{POST /v2/_cluster/handover}).  N stages the
    parts; the last one makes N write Q in one transaction that also
    removes Q from its incoming set, and answer "imported": N serves Q from
    that moment.
 4. Only then does O delete its copy of Q (with Q's outgoing entry, in one
    transaction), and unfreeze: requests for Q reaching O are forwarded to
    N; a peer that forwarded one to O is told where Q is now (a 503 naming
    N in C{X-Marconi-Held-By}) and sends it there once more.

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
   import committed.  Once O sent the last part, N may serve Q even if
   its answer is lost (a timeout under load): Q then stays frozen on O
   (503) until the next announcement says whether N holds it ("have":
   O drops its copy) or not (O serves it again and sends it once more).
   Were O to serve its copy meanwhile, the writes it took would be
   dropped with it.  The same holds for every queue O still had to hand
   over when it restarts, and the drop after a "have" is made frozen.
 - I{Crashes}: the outgoing and incoming sets are in the SQLite files, in
   the same transactions as the copies they describe.  O killed before N
   confirmed: O still holds Q and sends it again after restart (N replaces
   its staged parts).  O killed after N confirmed: N answers "have" to
   the new announcement and O deletes its copy.  N killed before its
   import committed: Q is still incoming, O sends it again.  N's import
   and the end of its incoming entry are one transaction, so N never
   takes a second copy of a queue it already serves.
 - Markers are the queue's own (its counter moves with it), so a
   consumer's marker keeps working on N.

Draining: a node of weight 0 owns no queue; it hands all it holds over,
then stops (its process exits).
"""

import json
import sqlite3
from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred
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
from marconi.core.errors import MarconiError

log = Logger()

#: The reserved projects (L{marconi.core.reserved}: the health probes',
#: the subscriptions extension's records) stay with their node, and so do
#: reserved queues (named C{~...}).
_STAYING = tuple(sorted(reserved.PROJECTS))
#: The largest part of a handover (bytes of JSON), under any node's limit
#: on request bodies.
PART_BYTES = 160 * 1024
#: The project named in the signature of handover requests (they act for
#: no tenant; the queue's project is in the body).
_PROJECT = "-"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS cluster_moves ("
    " project TEXT NOT NULL, queue TEXT NOT NULL,"
    " direction TEXT NOT NULL, peer TEXT NOT NULL,"
    " PRIMARY KEY (project, queue)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS cluster_state ("
    " name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS cluster_parts ("
    " project TEXT NOT NULL, queue TEXT NOT NULL, part INTEGER NOT NULL,"
    " doc TEXT NOT NULL, PRIMARY KEY (project, queue, part)) WITHOUT ROWID",
)

_MESSAGE_COLUMNS = (
    "marker, id, body, ttl, created, expires, visible_at, client_id, "
    "claim_id, claim_expires, claim_count, tags, checksum"
)


# The SQL of the moves, run on the SQLite store's thread, each in the
# store's transaction.


def _prepare(c: sqlite3.Connection) -> tuple:
    """
    The moves in progress, and the ring last published (or L{None}).
    """
    for statement in _SCHEMA:
        c.execute(statement)
    moves = c.execute(
        "SELECT project, queue, direction, peer FROM cluster_moves"
    ).fetchall()
    row = c.execute("SELECT value FROM cluster_state WHERE name = 'published'")
    published = row.fetchone()
    return moves, None if published is None else json.loads(published[0])


def _publish(c: sqlite3.Connection, description: dict) -> None:
    c.execute(
        "INSERT OR REPLACE INTO cluster_state (name, value) VALUES ('published', ?)",
        (json.dumps(description),),
    )


def _scan(c: sqlite3.Connection) -> list:
    # Reserved queues (C{~audit}, the node's own audit river) and the
    # queues of reserved projects stay with their node.
    staying = ", ".join("?" * len(_STAYING))
    return c.execute(
        f"SELECT project, name FROM queues WHERE project NOT IN ({staying}) "
        "AND substr(name, 1, 1) != '~' "
        "UNION SELECT DISTINCT project, queue FROM messages "
        f"WHERE project NOT IN ({staying}) AND substr(queue, 1, 1) != '~'",
        _STAYING * 2,
    ).fetchall()


def _setMoves(c: sqlite3.Connection, direction: str, rows: list) -> None:
    c.execute("DELETE FROM cluster_moves WHERE direction = ?", (direction,))
    c.executemany(
        "INSERT OR REPLACE INTO cluster_moves (project, queue, direction, peer) "
        "VALUES (?, ?, ?, ?)",
        [(p, q, direction, peer) for p, q, peer in rows],
    )


def _exists(c: sqlite3.Connection, project: str, queue: str) -> bool:
    return (
        c.execute(
            "SELECT 1 FROM queues WHERE project = ? AND name = ? UNION ALL "
            "SELECT 1 FROM messages WHERE project = ? AND queue = ? LIMIT 1",
            (project, queue, project, queue),
        ).fetchone()
        is not None
    )


def _export(c: sqlite3.Connection, project: str, queue: str) -> Optional[dict]:
    """
    The whole of a queue, or L{None} when it does not exist.
    """
    if not _exists(c, project, queue):
        return None
    row = c.execute(
        "SELECT metadata, created FROM queues WHERE project = ? AND name = ?",
        (project, queue),
    ).fetchone()
    last = c.execute(
        "SELECT last FROM markers WHERE project = ? AND queue = ?", (project, queue)
    ).fetchone()
    messages = c.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE project = ? AND queue = ? "
        "ORDER BY marker",
        (project, queue),
    ).fetchall()
    claims = c.execute(
        "SELECT id, ttl, grace, updated, expires FROM claims "
        "WHERE project = ? AND queue = ?",
        (project, queue),
    ).fetchall()
    return {
        "row": None if row is None else list(row),
        "last": None if last is None else last[0],
        "messages": [list(m) for m in messages],
        "claims": [list(cl) for cl in claims],
    }


def _drop(c: sqlite3.Connection, project: str, queue: str) -> None:
    """
    Delete this node's copy of a queue that its new owner confirmed, with
    its outgoing entry.
    """
    pair = (project, queue)
    c.execute("DELETE FROM messages WHERE project = ? AND queue = ?", pair)
    c.execute("DELETE FROM claims WHERE project = ? AND queue = ?", pair)
    c.execute("DELETE FROM queues WHERE project = ? AND name = ?", pair)
    c.execute("DELETE FROM cluster_moves WHERE project = ? AND queue = ?", pair)


def _announced(c: sqlite3.Connection, queues: list, peer: str) -> list:
    """
    Record the queues C{peer} holds for this node; return those this node
    already holds (taken in an earlier handover).
    """
    have = []
    for project, queue in queues:
        if _exists(c, project, queue):
            have.append([project, queue])
            continue
        c.execute(
            "INSERT OR REPLACE INTO cluster_moves (project, queue, direction, peer) "
            "VALUES (?, ?, 'in', ?)",
            (project, queue, peer),
        )
    return have


def _stage(
    c: sqlite3.Connection, project: str, queue: str, part: int, doc: str
) -> None:
    pair = (project, queue)
    if part == 0:
        c.execute("DELETE FROM cluster_parts WHERE project = ? AND queue = ?", pair)
    c.execute(
        "INSERT OR REPLACE INTO cluster_parts (project, queue, part, doc) "
        "VALUES (?, ?, ?, ?)",
        (*pair, part, doc),
    )


def _import(
    c: sqlite3.Connection, project: str, queue: str, peer: str, parts: int
) -> str:
    """
    Write a queue from its staged parts, in this one transaction, and end
    its incoming entry.
    """
    pair = (project, queue)
    entry = c.execute(
        "SELECT peer FROM cluster_moves WHERE project = ? AND queue = ? "
        "AND direction = 'in'",
        pair,
    ).fetchone()
    if entry is None or entry[0] != peer:
        return "have" if _exists(c, project, queue) else "unknown"
    docs = [
        json.loads(d)
        for (d,) in c.execute(
            "SELECT doc FROM cluster_parts WHERE project = ? AND queue = ? "
            "ORDER BY part",
            pair,
        )
    ]
    if len(docs) != parts:
        raise ValueError(f"{len(docs)} parts staged of {parts}")
    first = docs[0]
    c.execute("DELETE FROM messages WHERE project = ? AND queue = ?", pair)
    c.execute("DELETE FROM claims WHERE project = ? AND queue = ?", pair)
    c.execute("DELETE FROM queues WHERE project = ? AND name = ?", pair)
    if first["row"] is not None:
        c.execute(
            "INSERT INTO queues (project, name, metadata, created) VALUES (?, ?, ?, ?)",
            (*pair, *first["row"]),
        )
    if first["last"] is not None:
        c.execute(
            "INSERT INTO markers (project, queue, last) VALUES (?, ?, ?) "
            "ON CONFLICT (project, queue) DO UPDATE SET "
            "last = MAX(last, excluded.last)",
            (*pair, first["last"]),
        )
    c.executemany(
        "INSERT INTO claims (project, queue, id, ttl, grace, updated, expires) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(*pair, *claim) for claim in first["claims"]],
    )
    for doc in docs:
        for m in doc["messages"]:
            cursor = c.execute(
                f"INSERT INTO messages (project, queue, {_MESSAGE_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*pair, *m),
            )
            if m[11]:
                c.executemany(
                    "INSERT INTO message_tags (seq, tag) VALUES (?, ?)",
                    [(cursor.lastrowid, tag) for tag in json.loads(m[11])],
                )
    c.execute("DELETE FROM cluster_moves WHERE project = ? AND queue = ?", pair)
    c.execute("DELETE FROM cluster_parts WHERE project = ? AND queue = ?", pair)
    return "imported"


def _parts(doc: dict) -> list:
    """
    Split an exported queue into parts of at most about L{PART_BYTES}.
    """
    parts: list = []
    current = dict(doc, messages=[])
    size = len(json.dumps(current))
    for message in doc["messages"]:
        length = len(json.dumps(message)) + 2
        if current["messages"] and size + length > PART_BYTES:
            parts.append(current)
            current, size = {"messages": []}, 20
        current["messages"].append(message)
        size += length
    parts.append(current)
    return parts


class Rebalancer(Service):
    """
    Hands the queues of this node's SQLite store to their owners when the
    ring changes, and takes the queues handed to it (see the module's
    description).  With another home store it only swaps rings.

    @param store: this node's home store, unwrapped.
    """

    def __init__(self, router: Any, store: Any, reactor: Any) -> None:
        self.router = router
        self.reactor = reactor
        # The SQLite store runs work on its thread with _run; no other
        # store holds queues only its node can open.
        self._run: Any = (
            getattr(store, "_run", None) if hasattr(store, "path") else None
        )
        self._running = False
        self._again = False
        self._savedVersion: Optional[str] = None
        #: Ring keys of queues whose last part was sent without a sure
        #: answer: the new owner may serve them already, so they stay
        #: frozen here until an announcement tells (see L{_handOver}).
        self.inDoubt: set = set()
        self.ready = False
        if self._run is not None:
            router.onRingChange = self.kick
            router.awaitPeerRings = True

    @property
    def local(self) -> bool:
        return self._run is not None

    def startService(self) -> None:
        super().startService()
        if self.local:
            Deferred.fromCoroutine(self._start()).addErrback(
                lambda f: log.failure("Reading the moves in progress failed", f)
            )

    async def _start(self) -> None:
        rows, published = await self._run(_prepare)
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
        for project, queue, direction, peer in rows:
            moves = self.router.outgoing if direction == "out" else self.router.incoming
            moves[key(project, queue)] = peer
            if direction == "out":
                # Stopped in the middle of its copy, maybe after the new
                # owner took it: not served here until its owner says.
                self._doubt(key(project, queue))
        if rows:
            log.info(
                "Resuming the moves of {count} queues interrupted by a stop",
                count=len(rows),
            )
        self.ready = True
        self.kick()

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
        if self.router.config.draining:
            log.warn("This node has weight 0: it hands all its queues over, then stops")
            if self.local:
                self.kick()
            else:
                log.warn("Drained: its queues are in a network store; stopping")
                self.reactor.stop()

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
        for project, queue in await self._run(_scan):
            ringKey = key(project, queue)
            owner = ring.owner(ringKey)
            if owner != me and ringKey not in router.incoming:
                outgoing[ringKey] = (project, queue, owner)
        await self._run(_setMoves, "out", list(outgoing.values()))
        router.outgoing = {k: v[2] for k, v in outgoing.items()}
        for ringKey in self.inDoubt - set(outgoing):
            # The ring changed again and gives it back to this node.
            self._settle(ringKey)
        stale = [k for k in router.incoming if ring.owner(k) != me]
        for k in stale:
            del router.incoming[k]
        if stale:
            rows = [(*k.split("/", 1), peer) for k, peer in router.incoming.items()]
            await self._run(_setMoves, "in", rows)
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
                        await self._run(_drop, project, queue)
                    finally:
                        router.outgoing.pop(ringKey, None)
                        self._settle(ringKey)
                elif ringKey in self.inDoubt:
                    # The new owner does not hold it: this copy is the
                    # only one, served again until its handover.
                    self._settle(ringKey)
        if self._savedVersion != ring.version:
            await self._run(_publish, ring.describe())
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

    def _doubt(self, ringKey: str) -> None:
        self.inDoubt.add(ringKey)
        self.router.frozen.add(ringKey)

    def _settle(self, ringKey: str) -> None:
        self.inDoubt.discard(ringKey)
        self.router.frozen.discard(ringKey)

    async def _handOver(self, project: str, queue: str, owner: str) -> bool:
        """
        Copy one queue to its new owner, then drop this node's copy.

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
            doc = await self._run(_export, project, queue)
            if doc is not None:
                parts = _parts(doc)
                answer: Optional[dict] = None
                for index, part in enumerate(parts):
                    body = dict(
                        part,
                        project=project,
                        queue=queue,
                        part=index,
                        parts=len(parts),
                    )
                    if index == len(parts) - 1:
                        self.inDoubt.add(ringKey)
                    answer = await self._send(owner, b"handover", body)
                    if answer is None:
                        return False
                if answer is None or answer.get("result") not in ("imported", "have"):
                    return False
            await self._run(_drop, project, queue)
            router.outgoing.pop(ringKey, None)
            log.info(
                "Handed queue {queue} of {project} over to {node} ({count} messages)",
                queue=queue,
                project=project,
                node=owner,
                count=0 if doc is None else len(doc["messages"]),
            )
            self.inDoubt.discard(ringKey)
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
        if not self.local or not self.ready:
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
        have = await self._run(_announced, queues, sender)
        held = {tuple(h) for h in have}
        for p, q in queues:
            if (p, q) not in held:
                router.incoming[key(p, q)] = sender
        log.info(
            "Node {node} holds {count} queues of this node until it hands them over",
            node=sender,
            count=len(queues) - len(held),
        )
        return 200, {"have": have}

    async def handedOver(self, sender: str, doc: dict) -> tuple:
        router = self.router
        project, queue = doc["project"], doc["queue"]
        part, parts = int(doc["part"]), int(doc["parts"])
        ringKey = key(project, queue)
        if not self.local or router.ring.owner(ringKey) != router.config.nodeName:
            return 409, _problem("Not the owner", "This node does not own the queue.")
        if router.incoming.get(ringKey) != sender:
            if await self._run(_exists, project, queue):
                return 200, {"result": "have"}
            return 409, _problem("Not announced", "The queue was not announced.")
        await self._run(_stage, project, queue, part, json.dumps(doc))
        if part < parts - 1:
            return 200, {"result": "staged"}
        result = await self._run(_import, project, queue, sender, parts)
        if result == "imported":
            router.incoming.pop(ringKey, None)
            log.info(
                "Took queue {queue} of {project} over from {node}",
                queue=queue,
                project=project,
                node=sender,
            )
        return 200, {"result": result}


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
