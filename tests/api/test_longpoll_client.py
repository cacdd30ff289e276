"""
The client library and the C{marconi} CLI long-poll: reads and claims wait
on the server instead of sleeping between polls.
"""

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater

from marconi.client.api import Client
from tests.api.test_longpoll import OTHER, until
from tests.client.test_cli import CLITestCase
from tests.client.test_client import ClientTestCase


async def _anext(iterator):
    return await iterator.__anext__()


class ClientWaitTests(ClientTestCase):
    async def test_listWithWait(self) -> None:
        """
        listMessages(wait=) is answered by a post made while it waits, and
        its timeout is the client's plus the wait.
        """
        clock = Clock()
        client = self.makeClient(clock=clock, timeout=30)
        listing = Deferred.fromCoroutine(client.listMessages("q", wait=20))
        await until(lambda: self.node.api.waiters.asleep() == 1)
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [50])
        await self.client.post("q", ["hello"])
        page = await listing
        self.assertEqual([m.body for m in page.items], ["hello"])

    async def test_claimAndPopWithWait(self) -> None:
        """
        claim(wait=) and pop(wait=) take what is posted while they wait.
        """
        claim = Deferred.fromCoroutine(self.client.claim("q", ttl=60, wait=20))
        await until(lambda: self.node.api.waiters.asleep() == 1)
        await self.makeClient(clientId=OTHER).post("q", ["one"])
        self.assertEqual([m.body for m in (await claim).messages], ["one"])
        pop = Deferred.fromCoroutine(self.client.pop("q", wait=20))
        await until(lambda: self.node.api.waiters.asleep() == 1)
        await self.client.post("q", ["two"])
        self.assertEqual([m.body for m in await pop], ["two"])

    async def test_followWaits(self) -> None:
        """
        follow(wait=) yields each new message without ever sleeping on the
        client's clock (which never moves here).
        """
        clock = Clock()
        follower = self.makeClient(clock=clock)
        stream = follower.follow("q", interval=1000, wait=20)
        for body in ("new", "newer"):
            nextOne = Deferred.fromCoroutine(_anext(stream))
            await until(lambda: self.node.api.waiters.asleep() == 1)
            await self.client.post("q", [body])
            self.assertEqual((await nextOne).body, body)

    async def test_followServerWithoutLongPolling(self) -> None:
        """
        Against a server that answers at once despite the wait (API v1.1
        does not long-poll), follow sleeps its interval between reads.
        """
        clock = Clock()
        follower = Client(self.node.url, project="p", clock=clock, version="v1.1")
        self.addCleanup(lambda: Deferred.fromCoroutine(follower.close()))
        stream = follower.follow("q", interval=7, wait=20)
        nextOne = Deferred.fromCoroutine(_anext(stream))
        await until(lambda: any(c.getTime() == 7 for c in clock.getDelayedCalls()))
        self.assertEqual(self.node.api.waiters.count, 0)
        await self.client.post("q", ["late"])
        clock.advance(7)
        self.assertEqual((await nextOne).body, "late")


class CLIWaitTests(CLITestCase):
    async def test_tailWaits(self) -> None:
        """
        tail prints a new message though its polling interval is far
        away: its read was waiting on the server.
        """
        await self.client.post("q", ["old"])
        cli = self.spawn("tail", "q", "--all", "--interval", "1000")
        await cli.waitFor(b'"old"')
        await until(lambda: self.node.api.waiters.asleep() == 1)
        await self.client.post("q", ["new"])
        await cli.waitFor(b'"new"')
        cli.process.signalProcess("INT")
        r = await cli.ended
        self.assertEqual(r.code, 130, r)

    async def test_consumeWaits(self) -> None:
        """
        consume on an empty queue runs its command on a message posted
        later, though its polling interval is far away.
        """
        cli = self.spawn(
            "consume", "q", "--interval", "1000", "--", "sh", "-c", "cat; echo done"
        )
        await until(lambda: self.node.api.waiters.asleep() == 1)
        await self.client.post("q", ["job"])
        await cli.waitFor(b"done")
        # The command ran; the message is deleted once it has exited.
        for _ in range(2000):
            stats = await self.client.queueStats("q")
            if (stats.free, stats.claimed) == (0, 0):
                break
            await deferLater(reactor, 0.005, lambda: None)
        cli.process.signalProcess("INT")
        await cli.ended
        self.assertEqual((stats.free, stats.claimed), (0, 0))
