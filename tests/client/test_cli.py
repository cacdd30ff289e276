"""
The C{marconi} command, run as a subprocess (C{python -m
marconi.client.cli}) against an in-process node on a real socket, and once
against the real daemon; and its output helpers in process.
"""

import io
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi.client.api import Client
from marconi.client.cli import (
    Output,
    Progress,
    UsageError,
    parseArguments,
    parseDocuments,
)
from marconi.client.models import OutgoingMessage
from tests.apihelpers import Node
from tests.nodeprocess import ROOT, environment, startNode


@dataclass
class Result:
    code: Optional[int]
    out: str
    err: str
    signal: Optional[int] = None

    def lines(self) -> list:
        return self.out.splitlines()

    def jsonLines(self) -> list:
        return [json.loads(line) for line in self.out.splitlines()]


class _CLI(ProcessProtocol):
    def __init__(self, stdin: bytes) -> None:
        self.stdin = stdin
        self.out = b""
        self.err = b""
        self.ended: Deferred = Deferred()
        self._waiting: list = []

    def connectionMade(self) -> None:
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.err += data
        self._check()

    def _check(self) -> None:
        for text, d in list(self._waiting):
            if text in self.out + self.err:
                self._waiting.remove((text, d))
                d.callback(None)

    def waitFor(self, text: bytes) -> Deferred:
        d: Deferred = Deferred()
        self._waiting.append((text, d))
        self._check()
        return d

    def processEnded(self, reason: Any) -> None:
        value = reason.value
        self.ended.callback(
            Result(
                getattr(value, "exitCode", None),
                self.out.decode("utf-8"),
                self.err.decode("utf-8"),
                getattr(value, "signal", None),
            )
        )


class CLITestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.node = Node(self)
        self.url = self.node.url
        self.client = Client(self.url, project="p")
        self.addCleanup(lambda: Deferred.fromCoroutine(self.client.close()))

    def spawn(self, *args: str, stdin: bytes = b"", env: Optional[dict] = None) -> _CLI:
        environ = {
            k: v for k, v in environment().items() if not k.startswith("MARCONI_")
        }
        environ.update(MARCONI_URL=self.url, MARCONI_PROJECT="p")
        environ.update(env or {})
        environ = {k: v for k, v in environ.items() if v is not None}
        protocol = _CLI(stdin)
        process = reactor.spawnProcess(
            protocol,
            sys.executable,
            [sys.executable, "-m", "marconi.client.cli", *args],
            env=environ,
            path=ROOT,
        )
        protocol.process = process
        return protocol

    async def cli(self, *args: str, **kw: Any) -> Result:
        return await self.spawn(*args, **kw).ended

    async def ok(self, *args: str, **kw: Any) -> Result:
        result = await self.cli(*args, **kw)
        self.assertEqual(result.code, 0, result)
        return result

    async def bodies(self, queue: str) -> list:
        return [
            m.body
            async for m in self.client.messages(queue, echo=True, includeClaimed=True)
        ]


class QueueCommandTests(CLITestCase):
    async def test_queueCommands(self) -> None:
        """
        queue create/list/stats/meta/delete print tables for people and
        JSON with --json, and exit 0.
        """
        r = await self.ok("queue", "create", "jobs", '{"owner": "me"}')
        self.assertEqual(r.out, "Created queue jobs.\n")
        r = await self.ok("queue", "create", "jobs")
        self.assertEqual(r.out, "Queue jobs already exists.\n")
        await self.ok("queue", "create", "mail")
        r = await self.ok("queue", "list", "--count")
        self.assertEqual(r.lines(), ["NAME", "jobs", "mail", "2 queues"])
        r = await self.ok("--json", "queue", "list", "--detailed")
        self.assertEqual(
            [(q["name"], q["metadata"]) for q in r.jsonLines()],
            [("jobs", {"owner": "me"}), ("mail", {})],
        )
        await self.client.post("jobs", [1, 2])
        r = await self.ok("queue", "stats", "jobs", "--json")
        self.assertEqual(json.loads(r.out)["messages"]["free"], 2)
        r = await self.ok("queue", "stats", "jobs")
        self.assertIn("free      2", r.out)
        r = await self.ok(
            "queue",
            "meta",
            "jobs",
            "--set",
            "n=3",
            "--set",
            "color=red",
            "--unset",
            "owner",
        )
        self.assertIn("color                            red", r.out)
        metadata = await self.client.queueMetadata("jobs")
        self.assertEqual((metadata["n"], metadata["color"]), (3, "red"))
        self.assertNotIn("owner", metadata)
        r = await self.ok("queue", "delete", "mail")
        self.assertEqual(r.out, "Deleted queue mail.\n")
        self.assertEqual([q.name async for q in self.client.queues()], ["jobs"])


class PostTests(CLITestCase):
    async def test_postBody(self) -> None:
        """
        post QUEUE BODY posts one message with the ttl and tags given and
        prints its id.
        """
        r = await self.ok(
            "post", "q", '{"a": 1}', "--ttl", "120", "-t", "x", "--tag", "y"
        )
        [message] = [m async for m in self.client.messages("q", echo=True)]
        self.assertEqual(r.lines(), [message.id])
        self.assertEqual(
            (message.body, message.ttl, message.tags), ({"a": 1}, 120, ("x", "y"))
        )

    async def test_postStdin(self) -> None:
        """
        Without a BODY (or with -), stdin is read: JSON lines, or one JSON
        document spread over lines.
        """
        r = await self.ok("post", "q", stdin=b'{"n": 1}\n\n"two"\n[3]\n')
        self.assertEqual(len(r.lines()), 3)
        await self.ok("post", "q", "-", "--json", stdin=b'{\n  "pretty": true\n}\n')
        self.assertEqual(
            await self.bodies("q"), [{"n": 1}, "two", [3], {"pretty": True}]
        )

    async def test_postFileInBatches(self) -> None:
        """
        A file of 250 JSON lines is posted in batches, in order; stderr
        stays quiet when it is not a terminal.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            for i in range(250):
                f.write(json.dumps({"n": i}) + "\n")
        r = await self.ok("post", "q", "--file", path, "--batch-size", "100", "--json")
        self.assertEqual(len(json.loads(r.out)["ids"]), 250)
        self.assertEqual(r.err, "")
        self.assertEqual([b["n"] for b in await self.bodies("q")], list(range(250)))

    async def test_messageObjects(self) -> None:
        """
        With --message-objects each value is a message with its own ttl and
        tags; --tag is the default for the others.
        """
        lines = b'{"body": 1, "ttl": 90, "tags": ["a"]}\n{"body": 2}\n'
        await self.ok("post", "q", "--message-objects", "--tag", "d", stdin=lines)
        found = [m async for m in self.client.messages("q", echo=True)]
        self.assertEqual(
            [(m.body, m.ttl, m.tags) for m in found],
            [(1, 90, ("a",)), (2, 3600, ("d",))],
        )

    async def test_badInput(self) -> None:
        """
        A BODY that is not JSON, a bad JSON line, or a message object
        without a body is a usage error (2) that posts nothing.
        """
        r = await self.cli("post", "q", "hello")
        self.assertEqual(r.code, 2)
        self.assertIn("BODY is not JSON", r.err)
        r = await self.cli("post", "q", stdin=b"1\n{oops\n")
        self.assertEqual(r.code, 2)
        self.assertIn("stdin, line 2", r.err)
        r = await self.cli("post", "q", "--message-objects", stdin=b'{"ttl": 60}')
        self.assertEqual(r.code, 2)
        self.assertEqual(await self.bodies("q"), [])


class ReadTests(CLITestCase):
    async def test_list(self) -> None:
        """
        list prints every page as a table, or JSON lines; --tag filters
        and --limit stops early; --no-echo hides the caller's own messages.
        """
        await self.client.post(
            "q",
            [
                OutgoingMessage({"n": i}, tags=["odd"] if i % 2 else [])
                for i in range(25)
            ],
        )
        r = await self.ok("list", "q")
        self.assertEqual(r.lines()[0].split(), ["ID", "AGE", "TTL", "TAGS", "BODY"])
        self.assertEqual(len(r.lines()), 26)
        self.assertTrue(r.lines()[-1].endswith('{"n":24}'))
        r = await self.ok("list", "q", "--json", "--tag", "odd", "--limit", "3")
        self.assertEqual([m["body"]["n"] for m in r.jsonLines()], [1, 3, 5])
        self.assertEqual(r.jsonLines()[0]["tags"], ["odd"])
        r = await self.ok(
            "list", "q", "--no-echo", env={"MARCONI_CLIENT_ID": self.client.clientId}
        )
        self.assertEqual(r.out, "")

    async def test_getAndDelete(self) -> None:
        """
        get shows messages by id; delete removes them.
        """
        ids = await self.client.post("q", ["a", "b", "c"])
        r = await self.ok("get", "q", ids[1], "--json")
        self.assertEqual(r.jsonLines()[0]["body"], "b")
        r = await self.ok("get", "q", *ids[:2])
        self.assertEqual(len(r.lines()), 3)
        r = await self.ok("delete", "q", ids[0])
        self.assertEqual(r.out, "Deleted 1 message.\n")
        await self.ok("delete", "q", *ids[1:])
        self.assertEqual(await self.bodies("q"), [])

    async def test_pop(self) -> None:
        """
        pop takes and deletes messages; an empty queue says so on stderr.
        """
        await self.client.post("q", [1, 2, 3])
        r = await self.ok("pop", "q", "-n", "2", "--json")
        self.assertEqual([m["body"] for m in r.jsonLines()], [1, 2])
        self.assertEqual(await self.bodies("q"), [3])
        await self.ok("pop", "q")
        r = await self.ok("pop", "q")
        self.assertEqual((r.out, r.err), ("", "Nothing to pop.\n"))


class ClaimCommandTests(CLITestCase):
    async def test_claimDeleteRelease(self) -> None:
        """
        claim prints the claim and its messages; delete --claim removes a
        claimed message; release frees the rest; an empty queue claims
        nothing and still exits 0.
        """
        ids = await self.client.post("q", [1, 2, 3])
        r = await self.ok("claim", "q", "-n", "2", "--ttl", "60", "--json")
        claim = json.loads(r.out)
        self.assertEqual([m["id"] for m in claim["messages"]], ids[:2])
        self.assertEqual(claim["messages"][0]["claim_id"], claim["id"])
        r = await self.cli("delete", "q", ids[0])
        self.assertEqual(r.code, 1)
        self.assertIn("claimed", r.err)
        await self.ok("delete", "q", ids[0], "--claim", claim["id"])
        await self.ok("renew", "q", claim["id"], "--ttl", "120")
        r = await self.ok("release", "q", claim["id"])
        self.assertEqual(r.out, f"Released claim {claim['id']}.\n")
        r = await self.ok("claim", "q", "-n", "5")
        self.assertTrue(r.lines()[0].startswith("Claim "))
        self.assertIn("2 messages", r.lines()[0])
        r = await self.ok("claim", "q")
        self.assertEqual((r.out, r.err), ("", "Nothing to claim.\n"))
        r = await self.ok("claim", "q", "--json")
        self.assertEqual(json.loads(r.out), None)


class ConsumeTests(CLITestCase):
    async def test_drain(self) -> None:
        """
        consume --drain runs the command once per message with the body on
        stdin and the message's ids in the environment, deletes each, and
        stops when the queue is empty.
        """
        ids = await self.client.post("q", [{"n": 1}, "two", [3]])
        seen = os.path.abspath(self.mktemp())
        script = f'cat >> {seen}; echo "$MARCONI_QUEUE $MARCONI_MESSAGE_ID" >> {seen}'
        await self.ok("consume", "q", "--drain", "-n", "2", "--", "sh", "-c", script)
        with open(seen) as f:
            lines = f.read().splitlines()
        self.assertEqual(
            lines,
            ['{"n":1}', f"q {ids[0]}", '"two"', f"q {ids[1]}", "[3]", f"q {ids[2]}"],
        )
        self.assertEqual((await self.client.queueStats("q")).total, 0)

    async def test_failure(self) -> None:
        """
        A failing command releases the message for another try; after
        --max-attempts failures it is left claimed, the others are
        processed, and consume exits 1.
        """
        await self.client.post("q", [1, 2, 3])
        r = await self.cli(
            "consume",
            "q",
            "--drain",
            "--max-attempts",
            "2",
            "--",
            "sh",
            "-c",
            'read body; [ "$body" != 2 ]',
        )
        self.assertEqual(r.code, 1, r)
        self.assertIn("attempt 1 of 2", r.err)
        self.assertIn("attempt 2 of 2", r.err)
        self.assertIn("1 message failed 2 times", r.err)
        stats = await self.client.queueStats("q")
        self.assertEqual((stats.total, stats.claimed), (1, 1))
        self.assertEqual(await self.bodies("q"), [2])

    async def test_notRunnable(self) -> None:
        """
        A command that cannot be started exits 127 and releases its claim.
        """
        await self.client.post("q", [1])
        r = await self.cli("consume", "q", "--", "/nonexistent/command")
        self.assertEqual(r.code, 127)
        self.assertIn("cannot run /nonexistent/command", r.err)
        self.assertEqual((await self.client.queueStats("q")).free, 1)

    async def test_needsCommand(self) -> None:
        """
        consume without a command is a usage error.
        """
        r = await self.cli("consume", "q")
        self.assertEqual(r.code, 2)
        self.assertIn("consume needs a command", r.err)

    async def test_interrupt(self) -> None:
        """
        Ctrl-C (SIGINT) during a command stops it, releases the claim and
        exits 130 without a traceback.
        """
        await self.client.post("q", [1])
        cli = self.spawn(
            "consume", "q", "--", "sh", "-c", "echo started; exec sleep 60"
        )
        await cli.waitFor(b"started")
        cli.process.signalProcess("INT")
        r = await cli.ended
        self.assertEqual(r.code, 130, r)
        self.assertNotIn("Traceback", r.err)
        stats = await self.client.queueStats("q")
        self.assertEqual((stats.free, stats.claimed), (1, 0))


class TailTests(CLITestCase):
    async def test_tail(self) -> None:
        """
        tail --all prints the messages there and then the new ones as they
        come, each once, until Ctrl-C (exit 130, no traceback).
        """
        await self.client.post("q", [OutgoingMessage("old", tags=["t"])])
        cli = self.spawn("tail", "q", "--all", "--interval", "0.1")
        await cli.waitFor(b'"old"')
        await self.client.post("q", ["new", "newer"])
        await cli.waitFor(b'"newer"')
        cli.process.signalProcess("INT")
        r = await cli.ended
        self.assertEqual(r.code, 130, r)
        self.assertNotIn("Traceback", r.err)
        self.assertEqual(
            [line.split(" ", 1)[1] for line in r.lines()],
            ['[t] "old"', '"new"', '"newer"'],
        )


class ErrorTests(CLITestCase):
    async def test_apiError(self) -> None:
        """
        An error answer exits 1 with the server's title and description on
        stderr and nothing on stdout.
        """
        r = await self.cli("get", "q", "0" * 32)
        self.assertEqual((r.code, r.out), (1, ""))
        self.assertEqual(
            r.err, f"marconi: Not found: Message '{'0' * 32}' does not exist.\n"
        )

    async def test_usageErrors(self) -> None:
        """
        No command, an unknown one, or a bad option value exits 2.
        """
        for args in ((), ("frobnicate",), ("pop", "q", "-n", "zero")):
            r = await self.cli(*args)
            self.assertEqual(r.code, 2, (args, r))
            self.assertIn("usage: marconi", r.err)

    async def test_unreachable(self) -> None:
        """
        A server that cannot be reached exits 1 saying so.
        """
        port = self.node.port.getHost().port
        await self.node.port.stopListening()
        r = await self.cli("queue", "list", "--url", f"http://127.0.0.1:{port}")
        self.assertEqual(r.code, 1)
        self.assertIn(f"cannot reach http://127.0.0.1:{port}", r.err)

    async def test_flagsOverEnvironment(self) -> None:
        """
        --project, before or after the sub-command, wins over
        MARCONI_PROJECT.
        """
        await self.ok("queue", "create", "mine", "--project", "other")
        await self.ok("--project", "other", "queue", "create", "also")
        r = await self.ok("queue", "list")
        self.assertEqual(r.out, "")
        r = await self.ok("queue", "list", env={"MARCONI_PROJECT": "other"})
        self.assertEqual(r.lines(), ["NAME", "also", "mine"])

    async def test_noProject(self) -> None:
        """
        With no project set, a command the node refuses for want of one
        exits 1 pointing at --project and MARCONI_PROJECT, not at an HTTP
        header the user cannot set.
        """
        for env in ({}, {"MARCONI_PROJECT": ""}):
            r = await self.cli("queue", "list", env={"MARCONI_PROJECT": None, **env})
            self.assertEqual((r.code, r.out), (1, ""), r)
            self.assertEqual(
                r.err,
                "marconi: no project given: use --project PROJECT or set "
                "MARCONI_PROJECT\n",
            )

    async def test_health(self) -> None:
        """
        health reports the node's storage.
        """
        r = await self.ok("health", "--json")
        self.assertTrue(json.loads(r.out)["storage_reachable"])

    async def test_help(self) -> None:
        """
        --help exits 0 and lists the commands.
        """
        r = await self.ok("--help")
        for name in ("queue", "post", "list", "claim", "consume", "tail"):
            self.assertIn(name, r.out)

    async def test_lightImport(self) -> None:
        """
        Importing the command and building its parser loads neither Twisted
        nor treq.
        """
        protocol = _CLI(b"")
        code = (
            "import sys, marconi.client.cli as c; c.buildParser(); "
            "print([m for m in sys.modules if m.split('.')[0] in ('twisted', 'treq')])"
        )
        reactor.spawnProcess(
            protocol,
            sys.executable,
            [sys.executable, "-c", code],
            env=environment(),
            path=ROOT,
        )
        r = await protocol.ended
        self.assertEqual(r.out, "[]\n", r)


class DaemonCLITests(TestCase):
    timeout = 120

    async def test_againstDaemon(self) -> None:
        """
        The command against the real daemon: post from stdin, list, consume.
        """
        node = await startNode(self)
        env = {k: v for k, v in environment().items() if not k.startswith("MARCONI_")}
        env.update(MARCONI_URL=node.url, MARCONI_PROJECT="it")

        async def cli(*args: str, stdin: bytes = b"") -> Result:
            protocol = _CLI(stdin)
            reactor.spawnProcess(
                protocol,
                sys.executable,
                [sys.executable, "-m", "marconi.client.cli", *args],
                env=env,
                path=ROOT,
            )
            result = await protocol.ended
            self.assertEqual(result.code, 0, result)
            return result

        await cli("post", "jobs", stdin=b"1\n2\n3\n")
        r = await cli("list", "jobs", "--json")
        self.assertEqual([m["body"] for m in r.jsonLines()], [1, 2, 3])
        await cli("consume", "jobs", "--drain", "--", "sh", "-c", "cat > /dev/null")
        r = await cli("queue", "stats", "jobs", "--json")
        self.assertEqual(json.loads(r.out)["messages"]["total"], 0)


# The output helpers, in process.


class FakeTTY(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class OutputTests(SynchronousTestCase):
    def test_progressOnTTY(self) -> None:
        """
        The progress bar redraws in place on a terminal and ends with a
        newline.
        """
        stream = FakeTTY(True)
        progress = Progress(stream, "posting", 4)
        progress.advance(1)
        progress.advance(3)
        progress.finish()
        text = stream.getvalue()
        self.assertIn("\rposting [#######", text)
        self.assertIn("4/4 100%", text)
        self.assertTrue(text.endswith("\n"))

    def test_noProgressOffTTY(self) -> None:
        """
        Nothing is drawn when the stream is not a terminal, or the total is
        unknown.
        """
        for stream, total in ((FakeTTY(False), 4), (FakeTTY(True), None)):
            progress = Progress(stream, "posting", total)
            progress.advance(4)
            progress.finish()
            self.assertEqual(stream.getvalue(), "")

    def test_table(self) -> None:
        """
        Tables align their columns; missing values show as "-".
        """
        out = FakeTTY(False)
        Output(False, out, out).table(
            ("A", "LONGER"), [["xxxx", None], ["y", {"k": 1}]]
        )
        self.assertEqual(out.getvalue(), 'A     LONGER\nxxxx  -\ny     {"k":1}\n')

    def test_parseDocuments(self) -> None:
        """
        Text is one JSON document, or else JSON lines; a bad line is named.
        """
        self.assertEqual(parseDocuments('{"a":\n 1}', "x"), [{"a": 1}])
        self.assertEqual(parseDocuments("1\n\n[2]\n", "x"), [1, [2]])
        with self.assertRaises(UsageError) as caught:
            parseDocuments("1\nnope\n", "in.jsonl")
        self.assertIn("in.jsonl, line 2", str(caught.exception))
        self.assertRaises(UsageError, parseDocuments, "  \n", "x")


class ParserTests(SynchronousTestCase):
    def test_everyCommandNamesItsFunction(self) -> None:
        """
        Every sub-command sets the function that runs it, and each sets a
        different one; the words after C{--} are consume's command.
        """
        lines = [
            ["queue", "list"],
            ["queue", "create", "q"],
            ["queue", "delete", "q"],
            ["queue", "stats", "q"],
            ["queue", "meta", "q"],
            ["post", "q", "1"],
            ["list", "q"],
            ["get", "q", "i"],
            ["delete", "q", "i"],
            ["pop", "q"],
            ["claim", "q"],
            ["renew", "q", "c"],
            ["release", "q", "c"],
            ["consume", "q", "--", "sh", "-c", "true"],
            ["tail", "q"],
            ["health"],
        ]
        funcs = [parseArguments(line).func for line in lines]
        self.assertTrue(all(callable(f) for f in funcs))
        self.assertEqual(len(set(funcs)), len(lines))
        self.assertEqual(parseArguments(lines[13]).cmd, ["sh", "-c", "true"])


class CertsCommandTests(CLITestCase):
    async def test_certs(self) -> None:
        """
        C{marconi certs ca DIR} and C{marconi certs node DIR NAME} write a
        development CA and a node certificate it issued, with the node name
        as the certificate's common name.
        """
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        directory = os.path.abspath(self.mktemp())
        await self.ok("certs", "ca", directory)
        await self.ok("certs", "node", directory, "alpha", "--host", "127.0.0.1")
        with open(os.path.join(directory, "alpha.pem"), "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(os.path.join(directory, "ca.pem"), "rb") as f:
            ca = x509.load_pem_x509_certificate(f.read())
        name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        self.assertEqual(name, "alpha")
        self.assertEqual(cert.issuer, ca.subject)
        result = await self.cli("certs", "node", directory + "-missing", "beta")
        self.assertNotEqual(result.code, 0)
