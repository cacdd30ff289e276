"""
The real daemon: C{twistd -n marconi} in a subprocess, driven over HTTP with
treq and with python-zaqarclient.
"""

import json
import os
import socket
import subprocess
import sys

import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from tests.nodeprocess import TWISTD, NodeProcess, environment

HEADERS = {"Client-ID": "0f4fcd2c-1b7a-4a84-9f0a-7d1c2c0f6a11", "X-Project-ID": "it"}


class NodeTestCase(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.database = os.path.join(self.directory, "marconi.sqlite3")
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = treq.client.HTTPClient(Agent(reactor, pool=pool))

    async def startNode(self, *extra: str) -> NodeProcess:
        args = [
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--storage",
            f"sqlite:{self.database}",
            *extra,
        ]
        return await NodeProcess(self, self.directory, args).start()

    async def call(self, node, method, path, body=None, headers=HEADERS):
        data = json.dumps(body).encode() if body is not None else None
        response = await self.http.request(
            method, node.url + path, data=data, headers=headers
        )
        content = await treq.content(response)
        return response, (json.loads(content) if content else None)


class DaemonTests(NodeTestCase):
    async def test_roundTrip(self) -> None:
        """
        Through the real daemon: create a queue, post with tags, list with a
        tag filter, claim, delete with the claim, and see the queue empty.
        """
        node = await self.startNode()
        r, _ = await self.call(node, "PUT", "/v2/queues/work")
        self.assertEqual(r.code, 201)
        r, body = await self.call(
            node,
            "POST",
            "/v2/queues/work/messages",
            {"messages": [{"body": {"n": 1}, "tags": ["a"]}, {"body": {"n": 2}}]},
        )
        self.assertEqual(r.code, 201)
        r, body = await self.call(
            node, "GET", "/v2/queues/work/messages?echo=true&tags=a"
        )
        self.assertEqual([m["body"] for m in body["messages"]], [{"n": 1}])
        r, body = await self.call(
            node, "POST", "/v2/queues/work/claims?limit=5", {"ttl": 60}
        )
        self.assertEqual(r.code, 201)
        for message in body["messages"]:
            r, _ = await self.call(node, "DELETE", message["href"])
            self.assertEqual(r.code, 204)
        r, body = await self.call(node, "GET", "/v2/queues/work/stats")
        self.assertEqual(body["messages"]["total"], 0)
        reason = await node.stop()
        self.assertTrue(node.exitedCleanly(reason), node.log())

    async def test_survivesKill(self) -> None:
        """
        Acknowledged messages survive a SIGKILL of the node, and markers
        handed out before the crash still page correctly after it.
        """
        node = await self.startNode()
        posted = []
        for i in range(3):
            r, body = await self.call(
                node, "POST", "/v2/queues/q/messages", {"messages": [{"body": i}]}
            )
            posted += [h.rsplit("/", 1)[1] for h in body["resources"]]
        r, body = await self.call(
            node, "GET", "/v2/queues/q/messages?echo=true&limit=2"
        )
        nextHref = body["links"][0]["href"]
        await node.kill()
        node = await self.startNode()
        r, body = await self.call(
            node, "POST", "/v2/queues/q/messages", {"messages": [{"body": 3}]}
        )
        self.assertEqual(r.code, 201)
        r, body = await self.call(node, "GET", nextHref)
        self.assertEqual([m["body"] for m in body["messages"]], [2, 3])
        r, body = await self.call(node, "GET", "/v2/queues/q/messages?echo=true")
        self.assertEqual([m["id"] for m in body["messages"]][:3], posted)

    async def test_hugeContentLength(self) -> None:
        """
        A request declaring a 10 GB body is answered 413 at once, without
        the node reading the body: the answer comes when only the headers
        have been sent, the node spools nothing to a temporary file and its
        memory does not grow with the bytes sent after the headers.
        """
        node = await self.startNode()
        pid = node._process.pid
        head = (
            b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\n"
            b"Client-ID: abc\r\nX-Project-ID: p\r\n"
            b"Content-Length: 10737418240\r\n\r\n"
        )

        def send(body: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
                s.sendall(head)
                try:
                    s.sendall(body)
                except OSError:
                    pass
                data = b""
                while True:
                    try:
                        chunk = s.recv(65536)
                    except ConnectionResetError:
                        return data
                    if not chunk:
                        return data
                    data += chunk

        before = _rss(pid)
        for body in (b"", b"x" * 1000, b"x" * 20_000_000):
            answer = await deferToThread(send, body)
            self.assertTrue(answer.startswith(b"HTTP/1.1 413"), answer[:100])
            self.assertIn(b'"title"', answer)
        self.assertLess(_rss(pid) - before, 10 * 1024 * 1024)
        self.assertEqual(_spooled(pid), [])
        r, _ = await self.call(node, "GET", "/v2/ping")
        self.assertEqual(r.code, 204)

    async def test_projectInURL(self) -> None:
        """
        A client that cannot set headers uses /v2/projects/{id}/...; it sees
        the same queue as a client using X-Project-ID.
        """
        node = await self.startNode()
        await self.call(
            node, "POST", "/v2/queues/shared/messages", {"messages": [{"body": "hi"}]}
        )
        r, body = await self.call(
            node,
            "GET",
            "/v2/projects/it/queues/shared/messages?echo=true",
            headers={"Client-ID": "someone-else"},
        )
        self.assertEqual([m["body"] for m in body["messages"]], ["hi"])


class ZaqarClientTests(NodeTestCase):
    """
    python-zaqarclient, the reference Zaqar client, works against a node.
    """

    def setUp(self) -> None:
        super().setUp()
        try:
            import zaqarclient.queues.client  # noqa: F401
        except ImportError:
            raise SkipTest("python-zaqarclient is not installed") from None

    async def test_zaqarClient(self) -> None:
        """
        Queue create/list/stats/delete, message post/list/get/delete, claim
        create/query/renew/release and ping, through python-zaqarclient's v2
        API.
        """
        node = await self.startNode()
        results = await deferToThread(_zaqarSession, node.url)
        self.assertEqual(results["ping"], True)
        self.assertIn("jobs", results["queues"])
        self.assertEqual(results["count"], 1)
        self.assertEqual(results["listed"], [{"n": 1}, {"n": 2}, {"n": 3}])
        self.assertEqual(results["got"], {"n": 1})
        self.assertEqual(results["claimed"], [{"n": 1}, {"n": 2}])
        self.assertEqual(results["queried"], [{"n": 1}, {"n": 2}])
        self.assertEqual(results["renewedTTL"], 120)
        self.assertEqual(results["afterDelete"]["claimed"], 1)
        self.assertEqual(results["afterRelease"]["free"], 2)
        self.assertEqual(results["afterRelease"]["claimed"], 0)
        self.assertEqual(results["metadata"]["color"], "blue")
        self.assertNotIn("jobs", results["queuesAfterDelete"])


def _zaqarSession(url: str) -> dict:
    from zaqarclient.queues import client
    from zaqarclient.queues.v2 import claim as claims

    conf = {"auth_opts": {"backend": "noauth", "options": {"os_project_id": "zq"}}}
    c = client.Client(url, version=2, conf=conf)
    results: dict = {"ping": c.ping()}
    q = c.queue("jobs", force_create=True)
    q.metadata(new_meta={"color": "blue"})
    results["metadata"] = q.metadata(force_reload=True)
    q.post([{"body": {"n": 1}, "ttl": 600}, {"body": {"n": 2}}, {"body": {"n": 3}}])
    listing, count = c.queues(with_count=True)
    results["queues"] = [x.name for x in listing]
    results["count"] = count
    messages = list(q.messages(echo=True))
    results["listed"] = [m.body for m in messages]
    results["got"] = q.message(messages[0].id).body
    claim = q.claim(ttl=60, grace=60, limit=2)
    held = list(claim)
    results["claimed"] = [m.body for m in held]
    queried = claims.Claim(q, id=claim.id)
    results["queried"] = [m.body for m in queried]
    claim.update(ttl=120)
    results["renewedTTL"] = claims.Claim(q, id=claim.id).ttl
    held[0].delete()
    results["afterDelete"] = q.stats["messages"]
    claim.delete()
    results["afterRelease"] = q.stats["messages"]
    q.delete()
    listing, _ = c.queues()
    results["queuesAfterDelete"] = [x.name for x in listing]
    return results


class CommandLineTests(TestCase):
    def run_twistd(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", TWISTD, "marconi", *args],
            capture_output=True,
            text=True,
            env=environment(),
            timeout=60,
        )

    def test_help(self) -> None:
        """
        C{twistd marconi --help} explains every option and imports no
        backend client library.
        """
        code = (
            "import sys; sys.argv = ['twistd', 'marconi', '--help']\n"
            "from twisted.scripts.twistd import run\n"
            "try:\n    run()\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('txredisapi', 'txmongo') if m in sys.modules))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=environment(),
            timeout=60,
        )
        for option in ("--listen", "--storage", "--config"):
            self.assertIn(option, result.stdout)
        self.assertIn("HEAVY []", result.stdout)

    def test_badValue(self) -> None:
        """
        A bad option value is a short usage error, not a traceback.
        """
        result = self.run_twistd("--storage", "nosuch://x")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("unknown storage scheme", result.stderr + result.stdout)
        self.assertNotIn("Traceback", result.stderr + result.stdout)


def _rss(pid: int) -> int:
    """
    The resident set size of process C{pid}, in bytes.
    """
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _spooled(pid: int) -> list:
    """
    The deleted temporary files process C{pid} holds open (where
    twisted.web spools request bodies).
    """
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)"):
            found.append(target)
    return found


#: Bodies that are not acceptable JSON at all (any endpoint: 4xx).
MALFORMED_JSON = [
    b'{"messages":[{"body":NaN}]}',
    b'{"messages":[{"body":Infinity}]}',
    b'{"messages":[{"body":-Infinity}]}',
    b'{"messages":[{"body":1e999}]}',
    b'{"messages":[{"body":-1e999}]}',
    b'{"messages":[{"body":' + b"9" * 5000 + b"}]}",
    b'{"body":' + b"9" * 4400 + b"}",
    b'{"messages":[{"body":' + b"[" * 100_000 + b"]" * 100_000 + b"}]}",
    b'{"messages":[{"body":' + b'{"a":' * 20_000 + b"1" + b"}" * 20_000 + b"}]}",
    b'{"messages":[{"body":"\xff\xfe"}]}',
    b'{"messages":[{"body":"\xc3\x28"}]}',
    b'{"messages":[{"body":"\xed\xa0\x80"}]}',
    b'{"messages":[{"body":"\\ud800"}]}',
    b'{"messages":[{"body":"\\udfff x"}]}',
    b'{"messages":[{"body":1}],"messages":[{"body":2}]}',
    b'{"messages":[{"body":1,"body":2}]}',
    b'{"messages":[{"body":1}]',
    b'{"messages":[{"body":1}]}garbage',
    b"\xef\xbb\xbf{}",
    b"\x00\x00\x00",
    b"[" * 200_000,
]

#: Message posts of the wrong shape (4xx).
WRONG_MESSAGES = [
    b'{"messages":"not a list"}',
    b'{"messages":[]}',
    b'{"messages":[1,2]}',
    b'{"messages":[{"ttl":60}]}',
    b'{"messages":[{"body":1,"ttl":"60"}]}',
    b'{"messages":[{"body":1,"ttl":60.5}]}',
    b'{"messages":[{"body":1,"ttl":true}]}',
    b'{"messages":[{"body":1,"ttl":-1}]}',
    b'{"messages":[{"body":1,"delay":1e3}]}',
    b'{"messages":[{"body":1,"tags":"a"}]}',
    b'{"messages":[{"body":1,"tags":[1]}]}',
    b'{"messages":[{"body":1,"tags":["a b"]}]}',
    b"",
    b"   ",
    b"null",
]

#: Claim bodies that must each be refused with a 4xx.
MALFORMED_CLAIMS = [
    b'{"ttl":NaN}',
    b'{"ttl":1e999}',
    b'{"ttl":' + b"9" * 5000 + b"}",
    b'{"ttl":60,"ttl":70}',
    b'{"ttl":"60"}',
    b'{"ttl":60.0}',
    b'{"grace":-1}',
    b"[1]",
    b'"\\ud800"',
    b"[" * 100_000,
]


class MalformedInputTests(NodeTestCase):
    async def test_corpus(self) -> None:
        """
        Every body of the malformed corpus (non-finite and huge numbers,
        deep nesting, invalid UTF-8, lone surrogates, duplicate keys, wrong
        types, truncated and trailing text) posted as messages, as queue
        metadata and as claim options is answered with a JSON 4xx; nothing
        is stored; after ten rounds of the corpus the node's memory has not
        grown by more than a generous bound and it holds no spooled
        request bodies.
        """
        node = await self.startNode()
        r, _ = await self.call(
            node, "POST", "/v2/queues/held/messages", {"messages": [{"body": 1}]}
        )
        self.assertEqual(r.code, 201)
        r, body = await self.call(node, "POST", "/v2/queues/held/claims", {"ttl": 60})
        claim = body["messages"][0]["href"].rsplit("claim_id=", 1)[1]
        targets = [
            ("POST", "/v2/queues/q/messages", MALFORMED_JSON + WRONG_MESSAGES),
            ("PUT", "/v2/queues/q2", MALFORMED_JSON + [b"[1]", b'"text"', b"7"]),
            ("POST", "/v2/queues/held/claims", MALFORMED_JSON + MALFORMED_CLAIMS),
            (
                "PATCH",
                f"/v2/queues/held/claims/{claim}",
                MALFORMED_JSON + MALFORMED_CLAIMS,
            ),
        ]
        headers = dict(HEADERS, **{"Content-Type": "application/json"})

        async def round() -> list:
            bad = []
            for method, path, corpus in targets:
                for raw in corpus:
                    response = await self.http.request(
                        method, node.url + path, data=raw, headers=headers
                    )
                    content = await treq.content(response)
                    if not 400 <= response.code < 500 or b'"title"' not in content:
                        bad.append((method, path, raw[:60], response.code, content))
            return bad

        pid = node._process.pid
        self.assertEqual(await round(), [])
        before = _rss(pid)
        for _ in range(10):
            self.assertEqual(await round(), [])
        after = _rss(pid)
        self.assertLess(after - before, 50 * 1024 * 1024, (before, after))
        # The client may read an answer before the node is done with its
        # request (an answer leaves as soon as it is written): a spooled
        # body is let go of by then, or it leaked.
        for _ in range(50):
            if not _spooled(pid):
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(_spooled(pid), [])
        r, body = await self.call(node, "GET", "/v2/queues/q/stats")
        self.assertEqual(body["messages"]["total"], 0)
        r, _ = await self.call(node, "GET", "/v2/queues/q2")
        self.assertEqual(r.code, 200)
        r, body = await self.call(node, "GET", "/v2/queues")
        self.assertEqual([q["name"] for q in body["queues"]], ["held"])
        r, _ = await self.call(node, "GET", "/v2/ping")
        self.assertEqual(r.code, 204)
