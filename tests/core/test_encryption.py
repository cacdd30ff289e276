"""
Encryption at rest (C{_enable_encrypt_messages}) and the reserved settings
Marconi refuses rather than ignore.
"""

import base64
import json
import os
from typing import Any

import treq
import treq.client
from hypothesis import given, settings
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from marconi.config import ConfigError, load
from marconi.core import validation
from marconi.core.encryption import (
    Envelope,
    KeyConfigError,
    KeyRing,
    Undecryptable,
    isEnvelope,
    openMessage,
    sealMessage,
)
from marconi.core.jsontext import dumpBody
from marconi.core.limits import Limits
from marconi.core.messaging import Messaging
from marconi.storage.memory.store import MemoryStore
from marconi.storage.sqlite.store import SQLiteStore
from tests import mongoserver, redisserver
from tests.apihelpers import CLIENT, Node
from tests.nodeprocess import NodeProcess
from tests.strategies import jsonValues

MARKER = "plaintext-marker-7f3a9c"


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


RING = KeyRing.parse(f"k1:{key(1)} k2:{key(2)}")


class EnvelopeTests(SynchronousTestCase):
    """
    L{sealMessage} and L{openMessage}.
    """

    def seal(self, ring: KeyRing = RING, queue: str = "q") -> Envelope:
        return Envelope.parse(sealMessage(ring, "MD5:x", '{"a":1}', "p", queue))

    def test_roundTrip(self) -> None:
        """
        A sealed message opens to its checksum and body, and its stored
        text is JSON holding neither.
        """
        text = sealMessage(RING, "MD5:abc", f'"{MARKER}"', "p", "q")
        self.assertTrue(isEnvelope(text))
        self.assertNotIn(MARKER, text)
        self.assertNotIn("MD5:abc", text)
        self.assertEqual(list(json.loads(text)), ["$enc"])
        self.assertEqual(
            openMessage(RING, Envelope.parse(text), "p"), ("MD5:abc", f'"{MARKER}"')
        )

    def test_freshNonce(self) -> None:
        """
        The same message sealed twice gives two different ciphertexts.
        """
        self.assertNotEqual(self.seal().sealed, self.seal().sealed)

    def test_wrongKey(self) -> None:
        """
        A ring whose key of the same id differs cannot open it; a ring
        without that id says the key is not configured.
        """
        envelope = self.seal()
        other = KeyRing.parse(f"k1:{key(9)}")
        self.assertRaises(Undecryptable, openMessage, other, envelope, "p")
        missing = KeyRing.parse(f"k3:{key(3)}")
        e = self.assertRaises(Undecryptable, openMessage, missing, envelope, "p")
        self.assertIn("'k1' is not configured", e.reason)
        self.assertRaises(Undecryptable, openMessage, None, envelope, "p")

    def test_moved(self) -> None:
        """
        A ciphertext does not open in another project, nor when its queue
        name is changed.
        """
        envelope = self.seal()
        self.assertRaises(Undecryptable, openMessage, RING, envelope, "other")
        moved = Envelope(envelope.keyId, "elsewhere", envelope.sealed)
        self.assertRaises(Undecryptable, openMessage, RING, moved, "p")

    def test_tampered(self) -> None:
        """
        Flipping any one byte of the sealed data makes it fail.
        """
        envelope = self.seal()
        for i in range(len(envelope.sealed)):
            data = bytearray(envelope.sealed)
            data[i] ^= 1
            changed = Envelope(envelope.keyId, envelope.queue, bytes(data))
            self.assertRaises(Undecryptable, openMessage, RING, changed, "p")

    def test_clientBodyIsNeverAnEnvelope(self) -> None:
        """
        A client body shaped like an envelope is stored in compact form,
        which is never taken for one.
        """
        body = json.loads(sealMessage(RING, "", "1", "p", "q"))
        self.assertFalse(isEnvelope(dumpBody(body)))

    def test_keyParsing(self) -> None:
        """
        Keys are ID:BASE64 of 32 bytes; the first is current unless named.
        """
        self.assertEqual(RING.current, "k1")
        ring = KeyRing.parse(f"k1:{key(1)}\nk2:{key(2)}", "k2")
        self.assertEqual(ring.current, "k2")
        for bad in (
            "",
            "k1",
            f"k 1:{key(1)}",
            "k1:" + base64.b64encode(b"short").decode(),
            "k1:not-base64!",
            f"k1:{key(1)} k1:{key(2)}",
        ):
            self.assertRaises(KeyConfigError, KeyRing.parse, bad)
        self.assertRaises(KeyConfigError, KeyRing.parse, f"k1:{key(1)}", "k9")


class PropertyTests(SynchronousTestCase):
    """
    Any JSON body survives an encrypted queue exactly.
    """

    @settings(max_examples=60, deadline=None)
    @given(jsonValues())
    def test_bodies(self, body: Any) -> None:
        """
        Posting and reading a body through the domain gives its stored
        compact text and checksum back, and the store holds neither.
        """
        bus = Messaging(MemoryStore(), Clock(), Limits(), encryption=RING)
        metadata = {"_enable_encrypt_messages": True}
        [new] = validation.messages([{"body": body}], Limits(), metadata)
        [sealed] = bus._seal("p", "q", metadata, [new])
        self.assertTrue(isEnvelope(sealed.body))
        self.assertEqual(sealed.checksum, "")
        checksum, text = openMessage(RING, Envelope.parse(sealed.body), "p")
        self.assertEqual((checksum, text), (new.checksum, new.body))
        self.assertEqual(json.loads(text), body)


def encryptedNode(test: TestCase, ring: Any = RING, store: Any = None) -> Node:
    node = Node(test, store=store)
    node.bus.encryption = ring
    return node


async def makeQueue(node: Node, queue: str, encrypted: bool = True) -> None:
    response = await node.request(
        "PUT", f"/v2/queues/{queue}", {"_enable_encrypt_messages": encrypted}
    )
    assert response.code in (201, 204), response.body


async def setEncryption(node: Node, queue: str, value: bool) -> Any:
    operation = {
        "op": "replace",
        "path": "/metadata/_enable_encrypt_messages",
        "value": value,
    }
    return await node.request(
        "PATCH",
        f"/v2/queues/{queue}",
        raw=json.dumps([operation]).encode(),
        headers={"Content-Type": "application/openstack-messaging-v2.0-json-patch"},
    )


class APITests(TestCase):
    """
    Encrypted queues through the API of an in-process node.
    """

    async def test_readPaths(self) -> None:
        """
        Listing, getting, getting a set, claiming and popping all answer
        the plaintext bodies and their checksums, as a plain queue does.
        """
        node = encryptedNode(self)
        await makeQueue(node, "enc")
        await makeQueue(node, "plain", False)
        body = {"marker": MARKER, "n": [1, 2.5, "é"]}
        answers = {}
        for queue in ("enc", "plain"):
            ids = await node.post(queue, {"body": body}, {"body": "two", "ttl": 300})
            base = f"/v2/queues/{queue}"
            listed = await node.request("GET", f"{base}/messages?echo=true")
            one = await node.request("GET", f"{base}/messages/{ids[0]}")
            some = await node.request("GET", f"{base}/messages?ids={','.join(ids)}")
            stats = await node.request("GET", f"{base}/stats")
            claim = await node.request("POST", f"{base}/claims?limit=1", {"ttl": 60})
            popped = await node.request("DELETE", f"{base}/messages?pop=1")
            answers[queue] = (
                [(m["body"], m["checksum"]) for m in listed.json["messages"]],
                (one.json["body"], one.json["checksum"]),
                sorted(json.dumps(m["body"]) for m in some.json["messages"]),
                stats.json["messages"]["oldest"]["body"],
                stats.json["messages"]["total"],
                [m["body"] for m in claim.json["messages"]],
                [m["body"] for m in popped.json["messages"]],
            )
        self.assertEqual(answers["enc"], answers["plain"])
        self.assertEqual(answers["enc"][1][0], body)
        self.assertEqual(answers["enc"][1][1], validation.checksum(body))
        self.assertEqual(answers["enc"][4], 2)

    async def test_storedEncrypted(self) -> None:
        """
        The store holds envelopes for an encrypted queue, plain bodies
        for a plain one.
        """
        node = encryptedNode(self)
        await makeQueue(node, "enc")
        await node.post("enc", {"body": MARKER})
        await node.post("plain", {"body": MARKER})
        now = node.clock.seconds()
        [enc] = await node.store.getMessages(
            "p", "enc", [await firstId(node, "enc")], now
        )
        [plain] = await node.store.getMessages(
            "p", "plain", [await firstId(node, "plain")], now
        )
        self.assertTrue(isEnvelope(enc.body))
        self.assertNotIn(MARKER, enc.body)
        self.assertEqual(plain.body, f'"{MARKER}"')

    async def test_rotation(self) -> None:
        """
        After a new key is made current, old messages still open and new
        ones are sealed with the new key; a message whose key was removed
        is left out of listings and answers 404 saying why.
        """
        node = encryptedNode(self, KeyRing.parse(f"k1:{key(1)}"))
        await makeQueue(node, "q")
        [old] = await node.post("q", {"body": "old"})
        node.bus.encryption = KeyRing.parse(f"k1:{key(1)} k2:{key(2)}", "k2")
        [new] = await node.post("q", {"body": "new"})
        now = node.clock.seconds()
        stored = await node.store.getMessages("p", "q", [old, new], now)
        keyIds = {m.id: Envelope.parse(m.body).keyId for m in stored}
        self.assertEqual(keyIds, {old: "k1", new: "k2"})
        listed = await node.request("GET", "/v2/queues/q/messages?echo=true")
        self.assertEqual([m["body"] for m in listed.json["messages"]], ["old", "new"])
        node.bus.encryption = KeyRing.parse(f"k2:{key(2)}")
        listed = await node.request("GET", "/v2/queues/q/messages?echo=true")
        self.assertEqual([m["body"] for m in listed.json["messages"]], ["new"])
        gone = await node.request("GET", f"/v2/queues/q/messages/{old}")
        self.assertEqual(gone.code, 404)
        self.assertIn("'k1' is not configured", gone.json["description"])
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    async def test_switching(self) -> None:
        """
        A queue switched off keeps reading its encrypted messages and
        stores new ones plain; switched on again, it seals again.
        """
        node = encryptedNode(self)
        await makeQueue(node, "q")
        await node.post("q", {"body": 1})
        patch = await setEncryption(node, "q", False)
        self.assertEqual(patch.code, 200, patch.body)
        await node.post("q", {"body": 2})
        self.assertEqual((await setEncryption(node, "q", True)).code, 200)
        await node.post("q", {"body": 3})
        listed = await node.request("GET", "/v2/queues/q/messages?echo=true")
        self.assertEqual([m["body"] for m in listed.json["messages"]], [1, 2, 3])
        ids = [m["id"] for m in listed.json["messages"]]
        stored = await node.store.getMessages("p", "q", ids, node.clock.seconds())
        self.assertEqual([isEnvelope(m.body) for m in stored], [True, False, True])

    async def test_movedToAnotherQueue(self) -> None:
        """
        A sealed body copied into another queue of the project is not
        answered there.
        """
        node = encryptedNode(self)
        await makeQueue(node, "a")
        [source] = await node.post("a", {"body": MARKER})
        [sealed] = await node.store.getMessages(
            "p", "a", [source], node.clock.seconds()
        )
        [target] = await node.post("b", {"body": "plain"})
        await node.store.deleteMessage("p", "b", target, None, node.clock.seconds())
        from marconi.core.models import NewMessage

        await node.store.postMessages(
            "p",
            "b",
            [NewMessage(body=sealed.body, ttl=300)],
            CLIENT,
            node.clock.seconds(),
        )
        listed = await node.request("GET", "/v2/queues/b/messages?echo=true")
        self.assertEqual(listed.json["messages"], [])
        stats = await node.request("GET", "/v2/queues/b/stats")
        self.assertEqual(stats.json["messages"]["total"], 1)
        self.assertNotIn("oldest", stats.json["messages"])

    async def test_deadLetters(self) -> None:
        """
        Messages moved to the dead letter queue of an encrypted queue open
        there.
        """
        node = encryptedNode(self)
        response = await node.request(
            "PUT",
            "/v2/queues/q",
            {
                "_enable_encrypt_messages": True,
                "_max_claim_count": 1,
                "_dead_letter_queue": "dlq",
            },
        )
        self.assertEqual(response.code, 201)
        await node.post("q", {"body": MARKER})
        await node.request("POST", "/v2/queues/q/claims", {"ttl": 60, "grace": 60})
        node.clock.advance(61)
        await node.request("POST", "/v2/queues/q/claims", {"ttl": 60, "grace": 60})
        listed = await node.request("GET", "/v2/queues/dlq/messages?echo=true")
        self.assertEqual([m["body"] for m in listed.json["messages"]], [MARKER])

    async def test_refused(self) -> None:
        """
        Encryption without keys, a non-boolean setting, _flavor and
        _retry_policy are 400 with a clear description and store nothing;
        null for them, and false without keys, are accepted.
        """
        node = Node(self)
        cases = [
            ({"_enable_encrypt_messages": True}, "no encryption keys"),
            ({"_enable_encrypt_messages": "yes"}, "must be a boolean"),
            ({"_flavor": "gold"}, "no flavors"),
            ({"_retry_policy": {"retries_with_no_delay": 3}}, "no subscriptions"),
        ]
        for metadata, words in cases:
            response = await node.request("PUT", "/v2/queues/bad", metadata)
            self.assertEqual(response.code, 400, metadata)
            self.assertIn(words, response.json["description"])
            self.assertEqual(
                (await node.request("GET", "/v2/queues/bad")).json.get("_flavor"),
                None,
            )
        response = await node.request(
            "PUT",
            "/v2/queues/ok",
            {"_enable_encrypt_messages": False, "_flavor": None, "_retry_policy": None},
        )
        self.assertEqual(response.code, 201)
        await node.post("ok", {"body": MARKER})
        listed = await node.request("GET", "/v2/queues/ok/messages?echo=true")
        self.assertEqual(listed.json["messages"][0]["body"], MARKER)

    async def test_keysRemovedFromNode(self) -> None:
        """
        Posting to an encrypted queue on a node without keys is refused
        with 503, storing nothing plain.
        """
        node = encryptedNode(self)
        await makeQueue(node, "q")
        node.bus.encryption = None
        node.bus._forget("p", "q")
        response = await node.request(
            "POST", "/v2/queues/q/messages", {"messages": [{"body": MARKER}]}
        )
        self.assertEqual(response.code, 503)
        self.assertIn("no encryption keys", response.json["description"])
        stats = await node.request("GET", "/v2/queues/q/stats")
        self.assertEqual(stats.json["messages"]["total"], 0)


async def firstId(node: Node, queue: str) -> str:
    listed = await node.request("GET", f"/v2/queues/{queue}/messages?echo=true")
    return listed.json["messages"][0]["id"]


async def postBoth(node: Node) -> None:
    await makeQueue(node, "enc")
    await node.post("enc", {"body": {"secret": MARKER + "-enc"}})
    await node.post("plain", {"body": {"secret": MARKER + "-plain"}})
    listed = await node.request("GET", "/v2/queues/enc/messages?echo=true")
    assert listed.json["messages"][0]["body"] == {"secret": MARKER + "-enc"}


def filesUnder(directory: str) -> bytes:
    data = b""
    for root, _, names in os.walk(directory):
        for name in names:
            if not os.path.isfile(os.path.join(root, name)):
                continue
            with open(os.path.join(root, name), "rb") as f:
                data += f.read()
    return data


class OnDiskTests(TestCase):
    """
    The plaintext of an encrypted queue is nowhere in a real store; the
    plaintext of a plain queue is (the control).
    """

    def assertStored(self, raw: bytes) -> None:
        self.assertIn((MARKER + "-plain").encode(), raw)
        self.assertNotIn((MARKER + "-enc").encode(), raw)
        self.assertIn(b'{"$enc": "v1:k1:enc:', raw)

    async def test_sqlite(self) -> None:
        """
        Neither the SQLite file nor its WAL holds the encrypted plaintext.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        store = SQLiteStore(os.path.join(directory, "m.sqlite3"), reactor)
        store.startService()
        node = encryptedNode(self, store=store)
        await postBoth(node)
        self.assertStored(filesUnder(directory))

    async def test_redis(self) -> None:
        """
        Neither the keys of a real redis-server nor its append-only file
        hold the encrypted plaintext.
        """
        if redisserver.skipReason():
            raise self.skipTest(redisserver.skipReason())
        from tests.storage.test_redis import serverOf, startStore

        server = serverOf(self)
        store = await startStore(self, server.uri())
        node = encryptedNode(self, store=store)
        await postBoth(node)
        keys = redisserver.command(server.address, "KEYS", "*")
        dumps = b"".join(
            redisserver.command(server.address, "DUMP", k.decode())
            for k in keys.split(b"\r\n")
            if k and k[:1] not in b"*$"
        )
        self.assertStored(dumps)
        self.assertStored(filesUnder(server.directory))

    async def test_mongodb(self) -> None:
        """
        The raw documents of a MongoDB database do not hold the encrypted
        plaintext.
        """
        if mongoserver.skipReason():
            raise self.skipTest(mongoserver.skipReason())
        from bson import BSON
        from txmongo.connection import ConnectionPool

        from marconi.storage.mongodb.store import makeStore

        server = mongoserver.sharedServer()
        database = server.newDatabaseName()
        self.addCleanup(mongoserver.dropDatabaseLater, server, database)
        store = makeStore(server.uri(database, ttlIndexes="false"), reactor)
        store.startService()
        self.addCleanup(lambda: store.running and store.stopService())
        await store.ready()
        node = encryptedNode(self, store=store)
        await postBoth(node)
        pool = ConnectionPool(f"mongodb://{server.host}:{server.port}/", pool_size=1)
        self.addCleanup(pool.disconnect)
        db = pool[database]
        raw = b""
        for name in await db.collection_names():
            for doc in await db[name].find({}):
                raw += BSON.encode(doc)
        self.assertStored(raw)


class DaemonTests(TestCase):
    """
    A real node reads its keys from the configuration file.
    """

    timeout = 120

    async def test_configuredKeys(self) -> None:
        """
        A node started with [encryption] keys stores an encrypted queue's
        messages sealed in its SQLite file and answers them in plain.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        database = os.path.join(directory, "marconi.sqlite3")
        config = os.path.join(directory, "marconi.ini")
        with open(config, "w") as f:
            f.write(
                f"[encryption]\nkeys = old:{key(7)}\n  new:{key(8)}\ncurrent = new\n"
            )
        node = await NodeProcess(
            self,
            directory,
            [
                "--config",
                config,
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--storage",
                f"sqlite:{database}",
            ],
        ).start()
        headers = {"Client-ID": CLIENT, "X-Project-ID": "d"}
        pool = HTTPConnectionPool(reactor, persistent=False)
        http = treq.client.HTTPClient(Agent(reactor, pool=pool))
        url = f"{node.url}/v2/queues/q"
        response = await http.put(
            url, json={"_enable_encrypt_messages": True}, headers=headers
        )
        self.assertEqual(response.code, 201)
        await treq.content(response)
        response = await http.post(
            url + "/messages", json={"messages": [{"body": MARKER}]}, headers=headers
        )
        self.assertEqual(response.code, 201)
        await treq.content(response)
        response = await http.get(url + "/messages?echo=true", headers=headers)
        listed = json.loads(await treq.content(response))
        self.assertEqual(listed["messages"][0]["body"], MARKER)
        raw = filesUnder(directory)
        self.assertNotIn(MARKER.encode(), raw)
        self.assertIn(b'{"$enc": "v1:new:q:', raw)


class ConfigTests(SynchronousTestCase):
    """
    The [encryption] section of the configuration file.
    """

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_keys(self) -> None:
        """
        Keys and the current key are read; without the section there are
        none.
        """
        path = self.write(f"[encryption]\nkeys = a:{key(1)} b:{key(2)}\ncurrent = b\n")
        ring = load(path, {}).encryption
        assert ring is not None
        self.assertEqual(ring.current, "b")
        self.assertIsNone(load(self.write("[marconi]\n"), {}).encryption)

    def test_errors(self) -> None:
        """
        A bad key or an unknown setting is a configuration error naming it.
        """
        for text, words in (
            ("keys = a:AAAA", "must be 32 bytes"),
            (f"keys = a:{key(1)}\ncurrent = z", "'z' is not listed"),
            (f"keys = a:{key(1)}\nalgorithm = rsa", "unknown setting"),
        ):
            path = self.write(f"[encryption]\n{text}\n")
            e = self.assertRaises(ConfigError, load, path, {})
            self.assertIn(words, str(e))
