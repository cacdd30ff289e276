"""
Claim races: many consumers claiming from one queue at once, over HTTP, on
each storage driver with a real backend.
"""

from typing import Any, Sequence

from twisted.internet.defer import Deferred, gatherResults

from marconi.core.limits import Limits
from tests.apihelpers import Node
from tests.storage.stores import onEveryStore

CLAIMERS = 120
MESSAGES = 600


class ClaimRaceMixin:
    """
    The race, for a store given by L{makeStore}.
    """

    timeout = 120
    claimers = CLAIMERS
    messages = MESSAGES

    async def makeStore(self) -> Any:
        raise NotImplementedError

    async def test_concurrentClaimers(self) -> None:
        """
        120 claimers, each on its own connection, claim (up to 5 at a time)
        from one queue of 600 messages until nothing is left (fewer of
        both on a test server that serialises everything).  No message
        is in two live claims (the clock stands still, so no claim
        expires), every message is claimed, and deleting each with its
        claim empties the queue.
        """
        node = Node(self, Limits(maxMessagesPerPost=100), store=await self.makeStore())
        posted = []
        for start in range(0, self.messages, 100):
            posted += await node.post(
                "race",
                *(
                    {"body": {"n": n}}
                    for n in range(start, min(start + 100, self.messages))
                ),
            )
        claims = [(c, ids) for _, c, ids in await claimAll([node], self.claimers)]
        holders: dict = {}
        for claimId, ids in claims:
            for messageId in ids:
                holders.setdefault(messageId, []).append(claimId)
        doubly = {m: c for m, c in holders.items() if len(c) > 1}
        self.assertEqual(doubly, {})
        self.assertEqual(set(holders), set(posted))
        self.assertEqual(len({c for c, _ in claims}), len(claims))
        for claimId, ids in claims:
            r = await node.request(
                "DELETE",
                f"/v2/queues/race/messages?ids={','.join(ids)}&claim_ids={claimId}",
            )
            self.assertEqual(r.code, 204)
        r = await node.request("GET", "/v2/queues/race/stats")
        self.assertEqual(r.json["messages"]["total"], 0)


onEveryStore(
    ClaimRaceMixin,
    globals(),
    "ClaimRaceTests",
    # SecantusDB, the test MongoDB server, runs one operation at a time.
    Mongo={"claimers": 30, "messages": 150},
)


async def claimAll(nodes: Sequence[Any], claimers: int) -> list:
    """
    Run C{claimers} concurrent claimers of queue C{race}, claimer C{i}
    through C{nodes[i % len(nodes)]}, each claiming 5 messages at a time
    until nothing is left.

    @return: C{(claimer index, claim id, message ids)} for every claim.
    """
    claims: list = []

    async def claimer(index: int) -> None:
        node = nodes[index % len(nodes)]
        while True:
            r = await node.request(
                "POST",
                "/v2/queues/race/claims?limit=5",
                {"ttl": 300},
                client=f"claimer-{index}",
            )
            if r.code == 204:
                return
            assert r.code == 201, (r.code, r.body)
            claimId = r.header("location").rsplit("/", 1)[1]
            claims.append((index, claimId, [m["id"] for m in r.json["messages"]]))

    await gatherResults(
        [Deferred.fromCoroutine(claimer(i)) for i in range(claimers)],
        consumeErrors=True,
    )
    return claims
