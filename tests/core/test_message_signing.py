"""
HMAC message signing: the canonical form and its MACs, write-only signing
keys, signed deliveries checked with the client's verifier, required
producer signatures and key rotation; through an in-process node and once
through the real daemon.
"""

import base64
import hashlib
import hmac
import json
import os

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from marconi.client import (
    Client,
    Forbidden,
    OutgoingMessage,
    signMessage,
    verifyMessage,
)
from marconi.core import signing
from marconi.core.errors import ValidationFailed
from marconi.core.models import Message
from tests.apihelpers import START, Node
from tests.nodeprocess import ROOT, startNode

PATCH = {"Content-Type": "application/openstack-messaging-v2.0-json-patch"}
K1 = base64.b64encode(bytes(range(32))).decode()
K2 = base64.b64encode(bytes(range(100, 148))).decode()
K3 = base64.b64encode(b"\x07" * 40).decode()


def signed(item: dict, keyId: str, key: str, queue: str, project: str = "p") -> dict:
    """
    C{item} signed as a producer signs it, with the client's helper.
    """
    message = OutgoingMessage(
        item["body"], item.get("ttl"), item.get("delay"), item.get("tags", ())
    )
    return signMessage(message, keyId, key, queue, project).toJSON()


class CanonicalFormTests(TestCase):
    def test_deliveryDocument(self) -> None:
        """
        The delivery MAC is HMAC-SHA256 over the JCS form of the documented
        fields: keys sorted, no spaces, the body parsed from its stored text
        and re-serialised canonically (1.0 as 1).
        """
        m = Message(
            id="m1",
            marker=1,
            body='{"b":1.0,"a":"\u00e9"}',
            ttl=60,
            created=START + 0.7,
            expires=START + 60,
            visibleAt=START,
            clientId="c",
            tags=("x",),
        )
        document = signing.deliveryDocument("p", "q", m, int(m.created))
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
        canonical = canonical.replace("1.0", "1").replace("\\u00e9", "\u00e9")
        self.assertEqual(
            canonical,
            '{"body":{"a":"\u00e9","b":1},"enqueued":1700000000,"id":"m1",'
            '"project":"p","queue":"q","tags":["x"],"use":"delivery"}',
        )
        expected = base64.b64encode(
            hmac.new(bytes(range(32)), canonical.encode(), hashlib.sha256).digest()
        ).decode()
        self.assertEqual(signing.mac(bytes(range(32)), document), expected)
        rendered = json.loads(
            signing.signer("p", "q", {"_signing_keys": [{"id": "k1", "secret": K1}]})(m)
        )
        self.assertEqual(
            rendered,
            {
                "key_id": "k1",
                "alg": "HMAC-SHA256",
                "enqueued": 1700000000,
                "value": expected,
            },
        )

    def test_documentedExamples(self) -> None:
        """
        The worked examples of docs/signing.rst give the values it shows.
        """
        body = {"item": "book", "total": 12.5}
        delivery = {
            "use": "delivery",
            "project": "demo",
            "queue": "orders",
            "id": "65f0c1a2b3c4d5e6f7a8b9c0",
            "enqueued": 1700000000,
            "tags": ["eu"],
            "body": body,
        }
        self.assertEqual(
            signing.mac(bytes(range(32)), delivery),
            "/Iodrr5biMq/KO1me4hgmsw9eg/5Au64Jf1yb0h7ioQ=",
        )
        item = signed(
            {"body": body, "ttl": 300, "tags": ["eu"]}, "k1", K1, "orders", "demo"
        )
        self.assertEqual(
            item["signature"],
            {"key_id": "k1", "value": "y8/Emtdu9ougAfPobZ5pvFyamHQXZ4u8wtGor9k6Ju0="},
        )
        with open(os.path.join(ROOT, "docs", "signing.rst"), encoding="utf-8") as f:
            text = f.read()
        self.assertIn(K1, text)
        self.assertIn(item["signature"]["value"], text)
        self.assertIn("/Iodrr5biMq/KO1me4hgmsw9eg/5Au64Jf1yb0h7ioQ=", text)

    def test_anyChangeChangesTheMAC(self) -> None:
        """
        Changing the body, a tag, the queue, the project, the id or the
        enqueue time, or the key, changes the MAC.
        """
        base = {
            "use": "delivery",
            "project": "p",
            "queue": "q",
            "id": "m1",
            "enqueued": 1,
            "tags": ["a"],
            "body": {"n": 1},
        }
        key = bytes(32)
        seen = {signing.mac(key, base), signing.mac(b"\x01" * 32, base)}
        for field, value in (
            ("project", "p2"),
            ("queue", "q2"),
            ("id", "m2"),
            ("enqueued", 2),
            ("tags", ["b"]),
            ("body", {"n": 2}),
            ("use", "post"),
        ):
            seen.add(signing.mac(key, {**base, field: value}))
        self.assertEqual(len(seen), 9)

    def test_settings(self) -> None:
        """
        Keys need distinct ids and base64 secrets of at least 32 bytes; an
        id alone keeps a stored secret; requiring signatures needs a key;
        the key ids reads show are dropped.
        """
        bad = [
            [],
            {"id": "k"},
            [{"id": "k", "secret": base64.b64encode(b"x" * 31).decode()}],
            [{"id": "k", "secret": "not base64!"}],
            [{"id": "k", "secret": K1}, {"id": "k", "secret": K2}],
            [{"id": "bad id", "secret": K1}],
            [{"id": "k", "secret": K1, "other": 1}],
            [{"id": "unknown"}],
            [{"id": f"k{i}", "secret": K1} for i in range(signing.MAX_KEYS + 1)],
        ]
        for keys in bad:
            self.assertRaises(
                ValidationFailed, signing.checkSettings, {"_signing_keys": keys}, {}
            )
        self.assertRaises(
            ValidationFailed,
            signing.checkSettings,
            {"_require_signed_posts": True},
            {},
        )
        self.assertRaises(
            ValidationFailed,
            signing.checkSettings,
            {
                "_require_signed_posts": "yes",
                "_signing_keys": [{"id": "a", "secret": K1}],
            },
            {},
        )
        stored = {"_signing_keys": [{"id": "old", "secret": K1}]}
        self.assertEqual(
            signing.checkSettings(
                {
                    "_signing_keys": [{"id": "old"}, {"id": "new", "secret": K2}],
                    "_signing_key_ids": ["whatever"],
                },
                stored,
            ),
            {
                "_signing_keys": [
                    {"id": "old", "secret": K1},
                    {"id": "new", "secret": K2},
                ]
            },
        )


class SigningAPITestCase(TestCase):
    def setUp(self) -> None:
        self.node = Node(self)

    async def keyed(self, queue: str = "q", project: str = "p", **extra) -> None:
        metadata = {"_signing_keys": [{"id": "k1", "secret": K1}], **extra}
        r = await self.node.request(
            "PUT", f"/v2/queues/{queue}", metadata, project=project
        )
        self.assertEqual(r.code, 201, r.body)

    def assertRefused(self, response, code: int) -> None:
        self.assertEqual(response.code, code, response.body)
        self.assertEqual(sorted(response.json), ["description", "title"])

    async def stored(self, queue: str = "q", project: str = "p") -> list:
        r = await self.node.request(
            "GET",
            f"/v2/queues/{queue}/messages?echo=true&include_delayed=true",
            project=project,
        )
        return [] if r.code == 204 else r.json["messages"]


class SecretTests(SigningAPITestCase):
    async def test_keysNeverRead(self) -> None:
        """
        No read of a queue shows a secret: GET (v2 and v1.1), the detailed
        listing, PATCH's answer and stats show the key ids at most.
        """
        await self.keyed(_require_signed_posts=True, color="red")
        await self.node.post("q", signed({"body": 1}, "k1", K1, "q"))
        answers = []
        for path in (
            "/v2/queues/q",
            "/v1.1/queues/q",
            "/v2/queues?detailed=true",
            "/v1.1/queues?detailed=true",
            "/v2/queues/q/stats",
        ):
            r = await self.node.request("GET", path)
            self.assertEqual(r.code, 200, (path, r.body))
            answers.append(r)
        r = await self.node.request(
            "PATCH",
            "/v2/queues/q",
            [{"op": "add", "path": "/metadata/color", "value": "blue"}],
            headers=PATCH,
        )
        self.assertEqual(r.code, 200, r.body)
        answers.append(r)
        for r in answers:
            self.assertNotIn(K1.encode(), r.body)
            self.assertNotIn(b"_signing_keys", r.body)
        self.assertEqual(answers[0].json["_signing_key_ids"], ["k1"])
        self.assertTrue(answers[0].json["_require_signed_posts"])
        self.assertEqual(
            answers[2].json["queues"][0]["metadata"]["_signing_key_ids"], ["k1"]
        )
        self.assertEqual(answers[5].json["color"], "blue")

    async def test_badKeysRefused(self) -> None:
        """
        A short secret, or requiring signatures with no key, is a 400 with
        a JSON error and creates nothing.
        """
        short = base64.b64encode(b"x" * 16).decode()
        r = await self.node.request(
            "PUT", "/v2/queues/q", {"_signing_keys": [{"id": "k", "secret": short}]}
        )
        self.assertRefused(r, 400)
        r = await self.node.request(
            "PUT", "/v2/queues/q", {"_require_signed_posts": True}
        )
        self.assertRefused(r, 400)
        r = await self.node.request("GET", "/v2/queues")
        self.assertEqual(r.json["queues"], [])

    async def test_otherProject(self) -> None:
        """
        Another project's queue of the same name has none of the keys:
        its messages are not signed, it cannot refer to the keys by id, and
        its reads show no key ids.
        """
        await self.keyed()
        await self.node.request("PUT", "/v2/queues/q", {}, project="other")
        await self.node.post("q", {"body": 1}, project="other")
        [m] = await self.stored(project="other")
        self.assertNotIn("signature", m)
        r = await self.node.request(
            "PATCH",
            "/v2/queues/q",
            [{"op": "add", "path": "/metadata/_signing_keys", "value": [{"id": "k1"}]}],
            project="other",
            headers=PATCH,
        )
        self.assertRefused(r, 400)
        r = await self.node.request("GET", "/v2/queues/q", project="other")
        self.assertNotIn("_signing_key_ids", r.json)


class DeliveryTests(SigningAPITestCase):
    async def test_everyDeliveryIsSigned(self) -> None:
        """
        Listing, get by id, get by ids, claim, get claim and pop all give
        signatures the client's verifier accepts with the queue's key.
        """
        await self.keyed()
        ids = await self.node.post(
            "q", {"body": {"n": 1.5, "s": "\u00e9"}, "tags": ["t"]}, {"body": [1]}
        )
        delivered = list(await self.stored())
        r = await self.node.request("GET", f"/v2/queues/q/messages/{ids[0]}")
        delivered.append(r.json)
        r = await self.node.request("GET", f"/v2/queues/q/messages?ids={ids[1]}")
        delivered.extend(r.json["messages"])
        r = await self.node.request("POST", "/v2/queues/q/claims?limit=1", {})
        self.assertEqual(r.code, 201)
        delivered.extend(r.json["messages"])
        r = await self.node.request("GET", r.header("location"))
        delivered.extend(r.json["messages"])
        r = await self.node.request("DELETE", "/v2/queues/q/messages?pop=2")
        delivered.extend(r.json["messages"])
        # The pop takes the one message the claim does not hold.
        self.assertEqual(len(delivered), 7)
        for m in delivered:
            self.assertEqual(m["signature"]["key_id"], "k1")
            self.assertEqual(m["signature"]["alg"], "HMAC-SHA256")
            self.assertEqual(m["signature"]["enqueued"], int(START))
            self.assertTrue(verifyMessage(m, K1, "q", "p"), m)
            self.assertFalse(verifyMessage(m, K2, "q", "p"))

    async def test_tamperedFailsVerification(self) -> None:
        """
        A delivered message whose body, tags, id, enqueue time, queue or
        project is altered no longer verifies.
        """
        await self.keyed()
        await self.node.post("q", {"body": {"n": 1}, "tags": ["t"]})
        [m] = await self.stored()
        self.assertTrue(verifyMessage(m, K1, "q", "p"))
        signature = m["signature"]
        first = "B" if signature["value"].startswith("A") else "A"
        flipped = first + signature["value"][1:]
        for changed in (
            {**m, "body": {"n": 2}},
            {**m, "tags": ["u"]},
            {**m, "tags": []},
            {**m, "id": "0" * len(m["id"])},
            {**m, "signature": {**signature, "enqueued": signature["enqueued"] + 1}},
            {**m, "signature": {**signature, "value": flipped}},
            {k: v for k, v in m.items() if k != "signature"},
        ):
            self.assertFalse(verifyMessage(changed, K1, "q", "p"))
        self.assertFalse(verifyMessage(m, K1, "q2", "p"))
        self.assertFalse(verifyMessage(m, K1, "q", "p2"))

    async def test_unkeyedAndV11Unsigned(self) -> None:
        """
        A queue without keys delivers no signature; v1.1 answers never carry
        one, so its contract is unchanged.
        """
        await self.node.post("plain", {"body": 1})
        [m] = await self.stored("plain")
        self.assertNotIn("signature", m)
        await self.keyed()
        await self.node.post("q", {"body": 1})
        r = await self.node.request("GET", "/v1.1/queues/q/messages?echo=true")
        self.assertEqual(r.code, 200, r.body)
        self.assertNotIn("signature", r.json["messages"][0])


class RequiredSignatureTests(SigningAPITestCase):
    async def test_signedPostsAccepted(self) -> None:
        """
        Messages signed by the producer over body, tags, ttl and delay are
        stored and delivered.
        """
        await self.keyed(_require_signed_posts=True)
        item = signed({"body": {"a": [1, 2]}, "ttl": 300, "tags": ["x"]}, "k1", K1, "q")
        await self.node.post("q", item)
        [m] = await self.stored()
        self.assertEqual(m["body"], {"a": [1, 2]})
        self.assertTrue(verifyMessage(m, K1, "q", "p"))

    async def test_refusedPosts(self) -> None:
        """
        A missing, malformed, wrong-key, tampered, other-queue or
        other-project signature is a 403 with a JSON error, and nothing of
        the post is stored, not even its good messages.
        """
        await self.keyed(_require_signed_posts=True)
        good = signed({"body": 1}, "k1", K1, "q")
        cases = [
            {"body": 1},
            {"body": 1, "signature": "nope"},
            {"body": 1, "signature": {"key_id": ["k1"], "value": "x"}},
            {"body": 1, "signature": {"key_id": "k1"}},
            signed({"body": 1}, "k2", K2, "q"),
            signed({"body": 1}, "k1", K2, "q"),
            {**good, "body": 2},
            {**good, "ttl": 120},
            {**good, "tags": ["t"]},
            signed({"body": 1}, "k1", K1, "other"),
            signed({"body": 1}, "k1", K1, "q", project="p2"),
        ]
        for item in cases:
            r = await self.node.request(
                "POST", "/v2/queues/q/messages", {"messages": [good, item]}
            )
            self.assertRefused(r, 403)
            self.assertEqual(r.json["title"], "Invalid signature")
        self.assertEqual(await self.stored(), [])

    async def test_replayIntoAnotherQueue(self) -> None:
        """
        A message signed for one queue, replayed into another queue holding
        the same key, is refused there.
        """
        await self.keyed("a", _require_signed_posts=True)
        await self.keyed("b", _require_signed_posts=True)
        item = signed({"body": "pay 10"}, "k1", K1, "a")
        await self.node.post("a", item)
        r = await self.node.request(
            "POST", "/v2/queues/b/messages", {"messages": [item]}
        )
        self.assertRefused(r, 403)
        self.assertEqual(await self.stored("b"), [])

    async def test_optionalSignatureChecked(self) -> None:
        """
        Where signatures are not required, unsigned posts are stored, but a
        signature that is given must verify.
        """
        await self.keyed()
        await self.node.post("q", {"body": 1}, signed({"body": 2}, "k1", K1, "q"))
        bad = {**signed({"body": 3}, "k1", K1, "q"), "body": 4}
        r = await self.node.request(
            "POST", "/v2/queues/q/messages", {"messages": [bad]}
        )
        self.assertRefused(r, 403)
        self.assertEqual(len(await self.stored()), 2)

    async def test_v11CannotPostToSignedQueue(self) -> None:
        """
        v1.1 reads only ttl and body of a posted message, so a queue that
        requires signatures refuses its posts.
        """
        await self.keyed(_require_signed_posts=True)
        r = await self.node.request(
            "POST",
            "/v1.1/queues/q/messages",
            {"messages": [signed({"body": 1, "ttl": 60}, "k1", K1, "q")]},
        )
        self.assertEqual(r.code, 403, r.body)
        self.assertEqual(await self.stored(), [])


class UnkeyedQueueTests(SigningAPITestCase):
    async def test_malformedSignatureRefused(self) -> None:
        """
        On a queue without keys a null signature is no signature, and one
        that is not shaped as a signature is a 400 that stores nothing.
        """
        await self.node.post("q", {"body": 1, "signature": None})
        for bad in (5, "x", [], {"key_id": "k1"}, {"key_id": 1, "value": "v"}):
            response = await self.node.request(
                "POST",
                "/v2/queues/q/messages",
                {"messages": [{"body": 2, "signature": bad}]},
            )
            self.assertEqual(response.code, 400, bad)
            self.assertIn("signature", response.json["description"])
        self.assertEqual([m["body"] for m in await self.stored()], [1])


class RotationTests(SigningAPITestCase):
    async def rotate(self, keys: list) -> None:
        r = await self.node.request(
            "PATCH",
            "/v2/queues/q",
            [{"op": "add", "path": "/metadata/_signing_keys", "value": keys}],
            headers=PATCH,
        )
        self.assertEqual(r.code, 200, r.body)
        self.assertEqual(r.json["_signing_key_ids"], [k["id"] for k in keys])

    async def test_rotation(self) -> None:
        """
        During the overlap the node signs with the newest key and accepts
        posts signed with the old or the new; once the old key is removed,
        posts signed with it are refused.  The old key is kept by naming
        its id alone.
        """
        await self.keyed(_require_signed_posts=True)
        await self.rotate([{"id": "k1"}, {"id": "k2", "secret": K2}])
        await self.node.post(
            "q",
            signed({"body": "old"}, "k1", K1, "q"),
            signed({"body": "new"}, "k2", K2, "q"),
        )
        delivered = await self.stored()
        self.assertEqual([m["body"] for m in delivered], ["old", "new"])
        for m in delivered:
            self.assertEqual(m["signature"]["key_id"], "k2")
            self.assertTrue(verifyMessage(m, K2, "q", "p"))
        await self.rotate([{"id": "k2"}, {"id": "k3", "secret": K3}])
        r = await self.node.request(
            "POST",
            "/v2/queues/q/messages",
            {"messages": [signed({"body": "late"}, "k1", K1, "q")]},
        )
        self.assertRefused(r, 403)
        await self.node.post("q", signed({"body": "k2 still"}, "k2", K2, "q"))
        delivered = await self.stored()
        self.assertEqual(len(delivered), 3)
        self.assertTrue(all(verifyMessage(m, K3, "q", "p") for m in delivered))

    async def test_removeKeys(self) -> None:
        """
        Removing the keys while posts must be signed is refused; removing
        both settings leaves an unsigned queue.
        """
        await self.keyed(_require_signed_posts=True)
        remove = {"op": "remove", "path": "/metadata/_signing_keys"}
        r = await self.node.request("PATCH", "/v2/queues/q", [remove], headers=PATCH)
        self.assertRefused(r, 400)
        r = await self.node.request(
            "PATCH",
            "/v2/queues/q",
            [remove, {"op": "remove", "path": "/metadata/_require_signed_posts"}],
            headers=PATCH,
        )
        self.assertEqual(r.code, 200, r.body)
        await self.node.post("q", {"body": 1})
        [m] = await self.stored()
        self.assertNotIn("signature", m)


class DaemonTests(TestCase):
    async def test_throughTheDaemon(self) -> None:
        """
        Against the real daemon, with the Python client: a queue requiring
        signatures takes a signed post, refuses an unsigned one, and
        delivers messages that verify with the key.
        """
        node = await startNode(self)
        client = Client(node.url, project="it")
        self.addCleanup(lambda: Deferred.fromCoroutine(client.close()))
        keys = [{"id": "k1", "secret": K1}]
        await client.createQueue(
            "work", {"_signing_keys": keys, "_require_signed_posts": True}
        )
        metadata = await client.queueMetadata("work")
        self.assertEqual(metadata["_signing_key_ids"], ["k1"])
        self.assertNotIn(K1, json.dumps(metadata))
        message = signMessage(
            OutgoingMessage({"x": 1}, tags=["t"]), "k1", K1, "work", "it"
        )
        [messageId] = await client.post("work", [message])
        with self.assertRaises(Forbidden):
            await client.post("work", [OutgoingMessage({"x": 2})])
        got = await client.getMessage("work", messageId)
        self.assertEqual(got.signature["key_id"], "k1")
        self.assertTrue(verifyMessage(got, K1, "work", "it"))
        self.assertFalse(verifyMessage(got, K1, "other", "it"))
        claim = await client.claim("work", limit=5)
        self.assertTrue(all(verifyMessage(m, K1, "work", "it") for m in claim.messages))
