"""
The subscriptions extension in the real daemon: python-zaqarclient's
subscription calls, and deliveries that survive a receiver outage and a
crash of the node.
"""

import os

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest

from tests.extensions.test_subscriptions import Receiver, signed, waitUntil
from tests.integration.test_cluster import ClusterTestCase, queueOwnedBy
from tests.integration.test_node import NodeTestCase

# A retry every second, a hundred times.
EVERY_SECOND = {
    "retries_with_no_delay": 0,
    "minimum_delay_retries": 100,
    "minimum_delay": 1,
    "maximum_delay": 1,
    "maximum_delay_retries": 0,
}


class SubscriptionDaemonTests(NodeTestCase):
    def configure(self) -> str:
        config = os.path.join(self.directory, "marconi.ini")
        with open(config, "w") as f:
            f.write(
                "[extensions]\nenabled = subscriptions\n\n"
                "[extension:subscriptions]\n"
                "poll_interval = 0.5\nredeliver_after = 2\ntimeout = 5\n"
                # The receivers are on loopback.
                "allow_private = true\n"
            )
        return config

    async def test_zaqarclient(self) -> None:
        """
        python-zaqarclient creates, reads, lists, updates and deletes
        subscriptions against the daemon.
        """
        try:
            import zaqarclient.queues.client  # noqa: F401
        except ImportError:
            raise SkipTest("python-zaqarclient is not installed") from None
        node = await self.startNode("--config", self.configure())
        results = await deferToThread(_zaqarSession, node.url)
        self.assertEqual(results["created"]["subscriber"], "http://example.test/one")
        self.assertEqual(results["created"]["ttl"], 600)
        self.assertEqual(
            sorted(results["listed"]),
            ["http://example.test/one", "http://example.test/two"],
        )
        self.assertEqual(results["updated"], (900, {"k": "v"}))
        self.assertEqual(results["afterDelete"], ["http://example.test/two"])
        self.assertEqual(results["duplicate"], 409)

    async def test_crashAndOutage(self) -> None:
        """
        Messages posted while the receiver is down are delivered, signed,
        once it is back, even though the node was killed and restarted
        in between.
        """
        receiver = Receiver(self)
        await receiver.stop()
        config = self.configure()
        node = await self.startNode("--config", config)
        r, _ = await self.call(
            node, "PUT", "/v2/queues/q", {"_retry_policy": EVERY_SECOND}
        )
        self.assertEqual(r.code, 201)
        r, created = await self.call(
            node, "POST", "/v2/queues/q/subscriptions", {"subscriber": receiver.url}
        )
        self.assertEqual(r.code, 201)
        bodies = [{"n": n} for n in range(5)]
        for body in bodies:
            r, _ = await self.call(
                node, "POST", "/v2/queues/q/messages", {"messages": [{"body": body}]}
            )
            self.assertEqual(r.code, 201)
        await node.kill()
        receiver.restart()
        await self.startNode("--config", config)
        await waitUntil(
            lambda: {d["body"]["n"] for d in receiver.documents()} == set(range(5)),
            lambda: f"every message after the restart (got {receiver.got!r})",
        )
        for headers, body in receiver.got:
            self.assertTrue(signed(created["secret"], headers, body))


def _zaqarSession(url: str) -> dict:
    from zaqarclient.queues import client
    from zaqarclient.transport import errors

    zaqar = client.Client(
        url,
        version=2,
        conf={"auth_opts": {"backend": "noauth", "options": {"os_project_id": "zq"}}},
    )
    one = zaqar.subscription("q", subscriber="http://example.test/one", ttl=600)
    zaqar.subscription("q", subscriber="http://example.test/two", ttl=600)
    results: dict = {}
    got = zaqar.subscription("q", id=one.id, auto_create=True)
    results["created"] = {"subscriber": got.subscriber, "ttl": got.ttl}
    results["listed"] = [s.subscriber for s in zaqar.subscriptions("q")]
    one.update({"ttl": 900, "options": {"k": "v"}})
    again = zaqar.subscription("q", id=one.id)
    results["updated"] = (again.ttl, again.options)
    one.delete()
    results["afterDelete"] = [s.subscriber for s in zaqar.subscriptions("q")]
    try:
        zaqar.subscription("q", subscriber="http://example.test/two", ttl=600)
    except errors.TransportError as e:
        results["duplicate"] = e.code
    else:
        results["duplicate"] = None
    return results


class SubscriptionClusterTests(ClusterTestCase):
    def setUp(self) -> None:
        super().setUp()
        with open(os.path.join(self.root, "cluster.ini"), "a") as f:
            f.write(
                "\n[extensions]\nenabled = subscriptions\n"
                # The receivers are on loopback.
                "\n[extension:subscriptions]\nallow_private = true\n"
            )

    async def test_ownerDelivers(self) -> None:
        """
        In a cluster a subscription made through any node is kept and
        served by the queue's owner, and a message posted through a third
        node is delivered once, signed, by the owner.
        """
        receiver = Receiver(self)
        await self.startCluster()
        queue = queueOwnedBy("b")
        base = f"/v2/queues/{queue}/subscriptions"
        r, created = await self.call("a", "POST", base, {"subscriber": receiver.url})
        self.assertEqual(r.code, 201, created)
        r, listed = await self.call("c", "GET", base)
        self.assertEqual(
            [s["subscriber"] for s in listed["subscriptions"]], [receiver.url]
        )
        r, _ = await self.call(
            "c", "POST", f"/v2/queues/{queue}/messages", {"messages": [{"body": "hi"}]}
        )
        self.assertEqual(r.code, 201)
        await waitUntil(lambda: len(receiver.got) == 1, "the delivery")
        [(headers, body)] = receiver.got
        self.assertTrue(signed(created["secret"], headers, body))
        self.assertEqual(receiver.documents()[0]["body"], "hi")
        # Only the owner delivered: the others never connected to it.
        await deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(len(receiver.got), 1)
