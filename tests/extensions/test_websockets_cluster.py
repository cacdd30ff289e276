"""
The websockets extension in a cluster of three real nodes: a socket serves
the queues its node owns, names the owner of the others, and is pushed the
messages posted to its node's queues through any node.
"""

import os

from tests.extensions.test_websockets_node import Socket
from tests.integration.test_cluster import PROJECT, ClusterTestCase, queueOwnedBy


class WebsocketClusterTests(ClusterTestCase):
    def setUp(self) -> None:
        super().setUp()
        with open(os.path.join(self.root, "cluster.ini"), "a") as f:
            f.write("[extensions]\nenabled = websockets\n")

    async def test_owners(self) -> None:
        """
        A socket on node a serves a's queues and answers 421 naming node b
        and its URL for b's; a socket on b subscribed to b's queue is
        pushed a message posted to it through a (forwarded); queue_list
        gathers the project's queues from every node.
        """
        await self.startCluster()
        mine, theirs = queueOwnedBy("a"), queueOwnedBy("b")
        onA = await Socket.open(self, self.nodes["a"].url, PROJECT)
        onB = await Socket.open(self, self.nodes["b"].url, PROJECT)
        status, body = await onA.ask(
            "message_post", {"queue_name": mine, "messages": [{"body": 1}]}
        )
        self.assertEqual(status, 201, body)
        status, body = await onA.ask(
            "message_post", {"queue_name": theirs, "messages": [{"body": 2}]}
        )
        self.assertEqual(status, 421)
        self.assertIn("'b'", body["description"])
        self.assertIn(self.nodes["b"].url, body["description"])
        status, body = await onB.ask("subscription_create", {"queue_name": theirs})
        self.assertEqual(status, 201, body)
        response, _ = await self.call(
            "a",
            "POST",
            f"/v2/queues/{theirs}/messages",
            {"messages": [{"body": "through a", "ttl": 60}]},
        )
        self.assertEqual(response.code, 201)
        pushed = await onB.pushed()
        self.assertEqual((pushed["queue_name"], pushed["body"]), (theirs, "through a"))
        status, listed = await onA.ask("queue_list")
        self.assertEqual(status, 200)
        self.assertEqual(
            sorted(q["name"] for q in listed["queues"]), sorted([mine, theirs])
        )
