"""
Queue purge and the queue list filters through python-zaqarclient, the
reference Zaqar client, against the real daemon (C{twistd -n marconi}).
"""

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.nodeprocess import startNode


class ZaqarClientPurgeTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        try:
            import zaqarclient.queues.client  # noqa: F401
        except ImportError:
            raise SkipTest("python-zaqarclient is not installed") from None

    async def test_purgeAndFilters(self) -> None:
        """
        C{queue.purge()} (both resource types) and
        C{queue.purge(resource_types=["messages"])} empty the queue and keep
        its metadata; an unknown resource type is refused; one project's
        purge never touches another's queue of the same name; C{name} and
        metadata filters of C{client.queues()} list only the matching
        queues of the caller's project, the client following the filtered
        next links page by page.
        """
        node = await startNode(self)
        results = await deferToThread(_session, node.url)
        self.assertEqual(results["afterPurge"], [])
        self.assertEqual(results["afterMessagesPurge"], [])
        self.assertEqual(results["metadata"]["color"], "red")
        self.assertEqual(results["refused"], 400)
        self.assertEqual(results["stillThere"], ["before refused purge"])
        self.assertEqual(results["otherProject"], ["theirs"])
        self.assertEqual(results["byName"], ["jobs", "jobs-eu", "jobs-us"])
        self.assertEqual(results["byMetadata"], ["jobs", "jobs-eu"])
        self.assertEqual(results["count"], 2)
        self.assertEqual(results["otherByName"], ["jobs"])


def _session(url: str) -> dict:
    from zaqarclient.queues import client
    from zaqarclient.transport import errors

    def connect(project: str) -> client.Client:
        conf = {
            "auth_opts": {"backend": "noauth", "options": {"os_project_id": project}}
        }
        return client.Client(url, version=2, conf=conf)

    mine, theirs = connect("zq"), connect("other")
    results: dict = {}
    q = mine.queue("jobs", force_create=True)
    q.metadata(new_meta={"color": "red", "region": "eu"})
    other = theirs.queue("jobs", force_create=True)
    other.post([{"body": "theirs", "ttl": 600}])

    q.post([{"body": {"n": 1}, "ttl": 600}, {"body": {"n": 2}, "ttl": 600}])
    q.claim(ttl=60, grace=60, limit=1)
    q.purge()
    results["afterPurge"] = [
        m.body for m in q.messages(echo=True, include_claimed=True)
    ]

    q.post([{"body": {"n": 3}, "ttl": 600}])
    q.purge(resource_types=["messages"])
    results["afterMessagesPurge"] = [m.body for m in q.messages(echo=True)]
    results["metadata"] = q.metadata(force_reload=True)

    q.post([{"body": "before refused purge", "ttl": 600}])
    try:
        q.purge(resource_types=["messages", "claims"])
    except errors.MalformedRequest:
        results["refused"] = 400
    results["stillThere"] = [m.body for m in q.messages(echo=True)]
    results["otherProject"] = [m.body for m in other.messages(echo=True)]

    for name, meta in [
        ("jobs-eu", {"region": "eu"}),
        ("jobs-us", {"region": "us"}),
        ("reports", {"region": "eu", "color": "red"}),
    ]:
        mine.queue(name, force_create=True).metadata(new_meta=meta)
    listing, _ = mine.queues(name="jobs", limit=1)
    results["byName"] = [x.name for x in listing.stream()]
    listing, count = mine.queues(name="jobs", region="eu", limit=1, with_count=True)
    results["byMetadata"] = [x.name for x in listing.stream()]
    results["count"] = count
    listing, _ = theirs.queues(name="jobs")
    results["otherByName"] = [x.name for x in listing]
    return results
