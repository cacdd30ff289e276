"""
The logging drivers (stdout, file, syslog), their settings, how their
observer reaches twistd, and the access log.
"""

import io
import json
import os
import socket
import sys
import threading

from twisted.application.service import Application, IService, MultiService, Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, Logger, LogPublisher, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from zope.interface.verify import verifyObject

import marconi.plugins
from marconi import tap
from marconi.api import http
from marconi.api.http import MarconiSite
from marconi.config import Config
from marconi.core.interfaces import ILoggingDriverPlugin
from marconi.core.limits import Limits
from marconi.observability import logs, wiring
from tests.apihelpers import Node


class Capture:
    """
    Collects the events of a real L{Logger} call.
    """

    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)


def events(*calls):
    """
    Real events, as a L{Logger} makes them: C{calls} are
    C{(method, format, fields)}.
    """
    capture = Capture()
    log = Logger(namespace="marconi.test", observer=capture)
    for method, fmt, fields in calls:
        getattr(log, method)(fmt, **fields)
    return capture.events


def failureEvent():
    capture = Capture()
    log = Logger(namespace="marconi.test", observer=capture)
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        log.failure("Dividing failed for {who}", Failure(), who="probe")
    return capture.events[0]


class PluginTests(SynchronousTestCase):
    def test_found(self) -> None:
        """
        The stdout, file and syslog drivers are plugins providing
        L{ILoggingDriverPlugin}; each makes an L{ILogObserver}.
        """
        found = {p.name: p for p in getPlugins(ILoggingDriverPlugin, marconi.plugins)}
        self.assertEqual(sorted(found), ["file", "stdout", "syslog"])
        path = self.mktemp()
        settings = {
            "stdout": {},
            "file": {"path": path},
            "syslog": {"address": "udp:127.0.0.1:9"},
        }
        for name, plugin in found.items():
            self.assertTrue(verifyObject(ILoggingDriverPlugin, plugin))
            observer = plugin.makeObserver(settings[name])
            self.addCleanup(observer.close)
            self.assertTrue(verifyObject(ILogObserver, observer))


class StdoutTests(SynchronousTestCase):
    def test_text(self) -> None:
        """
        The text format writes one line per event with the time, the
        namespace and the formatted message.
        """
        stream = io.StringIO()
        observer = logs.makeStdout({"format": "text"}, stream)
        for event in events(("info", "Hello {name}", {"name": "world"})):
            observer(event)
        line = stream.getvalue()
        self.assertTrue(line.endswith("\n"))
        self.assertEqual(line.count("\n"), 1)
        self.assertIn("[marconi.test#info] Hello world", line)

    def test_json(self) -> None:
        """
        The JSON format writes one JSON object per line: time, level,
        namespace, message, and the event's scalar fields.
        """
        stream = io.StringIO()
        observer = logs.makeStdout({"format": "json"}, stream)
        for event in events(
            ("warn", "Slow {what}", {"what": "disk", "seconds": 1.5, "obj": object()}),
            ("info", "Second", {}),
        ):
            observer(event)
        lines = stream.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        first = json.loads(lines[0])
        self.assertEqual(first["level"], "warn")
        self.assertEqual(first["namespace"], "marconi.test")
        self.assertEqual(first["message"], "Slow disk")
        self.assertEqual((first["what"], first["seconds"]), ("disk", 1.5))
        self.assertNotIn("obj", first)
        self.assertTrue(first["time"].endswith("+00:00"))

    def test_jsonFailure(self) -> None:
        """
        A failure's traceback is one field of its JSON line.
        """
        stream = io.StringIO()
        logs.makeStdout({"format": "json"}, stream)(failureEvent())
        record = json.loads(stream.getvalue())
        self.assertEqual(record["level"], "critical")
        self.assertIn("ZeroDivisionError", record["traceback"])

    def test_badFormat(self) -> None:
        """
        An unknown format or setting is refused.
        """
        self.assertRaises(ValueError, logs.checkStdout, {"format": "xml"})
        self.assertRaises(ValueError, logs.checkStdout, {"colour": "yes"})


class FileTests(SynchronousTestCase):
    def test_writesAndRotates(self) -> None:
        """
        The file driver appends lines to its file, rotates it past
        C{rotate_length} bytes and keeps C{max_rotated_files} old files.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        path = os.path.join(directory, "marconi.log")
        observer = logs.makeFile(
            {
                "path": path,
                "format": "json",
                "rotate_length": "300",
                "max_rotated_files": "2",
            }
        )
        self.addCleanup(observer.close)
        for i in range(40):
            for event in events(("info", "Event {i}", {"i": i})):
                observer(event)
        names = sorted(os.listdir(directory))
        self.assertEqual(names, ["marconi.log", "marconi.log.1", "marconi.log.2"])
        with open(path, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual(lines[-1]["i"], 39)
        with open(path + ".1", encoding="utf-8") as f:
            older = [json.loads(line) for line in f]
        self.assertEqual(older[-1]["i"] + 1, lines[0]["i"])
        self.assertLessEqual(os.path.getsize(path + ".1"), 300 + 200)

    def test_settings(self) -> None:
        """
        The file driver needs a path in an existing directory and positive
        sizes; sizes take k, m and g suffixes.
        """
        self.assertRaises(ValueError, logs.checkFile, {})
        self.assertRaises(ValueError, logs.checkFile, {"path": "/no/such/dir/x.log"})
        good = {"path": self.mktemp()}
        logs.checkFile(dict(good, rotate_length="10m"))
        self.assertRaises(ValueError, logs.checkFile, dict(good, rotate_length="0"))
        self.assertRaises(ValueError, logs.checkFile, dict(good, rotate_length="ten"))


class SyslogTests(SynchronousTestCase):
    def listen(self, family=socket.AF_UNIX):
        """
        A real datagram socket for the observer to send to.
        """
        server = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(server.close)
        if family == socket.AF_UNIX:
            address = self.mktemp()
            server.bind(address)
        else:
            server.bind(("127.0.0.1", 0))
            address = server.getsockname()
        server.settimeout(5)
        return server, address

    def test_unixDatagram(self) -> None:
        """
        Each event is one datagram in the BSD syslog format: priority
        (facility * 8 + severity), time, ident[pid], namespace and text.
        """
        server, path = self.listen()
        observer = logs.makeSyslog(
            {"address": f"unix:{path}", "facility": "local3", "ident": "mq"}
        )
        self.addCleanup(observer.close)
        for event in events(
            ("info", "Hello {name}", {"name": "syslog"}),
            ("error", "Broken {thing}", {"thing": "disk"}),
        ):
            observer(event)
        first = server.recv(65536).decode()
        second = server.recv(65536).decode()
        self.assertTrue(first.startswith(f"<{19 * 8 + 6}>"), first)
        self.assertIn(f" mq[{os.getpid()}]: [marconi.test] Hello syslog", first)
        self.assertRegex(first, r"^<\d+>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ")
        self.assertTrue(second.startswith(f"<{19 * 8 + 3}>"), second)
        self.assertTrue(second.endswith("Broken disk"))

    def test_failureLines(self) -> None:
        """
        A failure is sent line by line (syslog messages are single lines),
        at critical severity.
        """
        server, path = self.listen()
        observer = logs.makeSyslog({"address": path})
        self.addCleanup(observer.close)
        observer(failureEvent())
        server.setblocking(False)
        datagrams = []
        while True:
            try:
                datagrams.append(server.recv(65536).decode())
            except BlockingIOError:
                break
        self.assertGreater(len(datagrams), 2)
        self.assertTrue(all(d.startswith(f"<{3 * 8 + 2}>") for d in datagrams))
        self.assertIn("Dividing failed for probe", datagrams[0])
        self.assertIn("ZeroDivisionError", "".join(datagrams))

    def test_udpJSON(self) -> None:
        """
        C{udp:HOST:PORT} sends to a UDP syslog server; C{format = json}
        makes the message a JSON object.
        """
        server, (host, port) = self.listen(socket.AF_INET)
        observer = logs.makeSyslog({"address": f"udp:{host}:{port}", "format": "json"})
        self.addCleanup(observer.close)
        for event in events(("info", "Hello {name}", {"name": "udp"})):
            observer(event)
        datagram = server.recv(65536).decode()
        record = json.loads(datagram.split(": ", 1)[1])
        self.assertEqual((record["message"], record["name"]), ("Hello udp", "udp"))

    def test_noDaemon(self) -> None:
        """
        Without a syslog daemon the lines are dropped and counted; logging
        never raises.
        """
        observer = logs.makeSyslog({"address": self.mktemp()})
        self.addCleanup(observer.close)
        for event in events(("info", "Lost", {})):
            observer(event)
        self.assertEqual(observer.dropped, 1)

    def test_settings(self) -> None:
        """
        Bad addresses, facilities and unknown settings are refused.
        """
        self.assertRaises(ValueError, logs.checkSyslog, {"address": "udp:host"})
        self.assertRaises(ValueError, logs.checkSyslog, {"facility": "local9"})
        self.assertRaises(ValueError, logs.checkSyslog, {"port": "514"})
        logs.checkSyslog({"address": "udp:[::1]:514", "facility": "LOCAL0"})


class TwistdTests(SynchronousTestCase):
    def configFile(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_observerGoesToApplication(self) -> None:
        """
        With a C{[logging]} driver, the service that twistd adds to its
        application makes the driver's observer the application's
        L{ILogObserver}, which twistd then begins logging to.
        """
        path = self.configFile(
            "[marconi]\nstorage = sqlite::memory:\nlisten = tcp:0\n"
            "[logging]\ndriver = stdout\nformat = json\n"
        )
        options = tap.Options()
        options.parseOptions(["--config", path])
        service = tap.makeService(options, reactor)
        application = Application("marconi")
        service.setServiceParent(application)
        observer = application.getComponent(ILogObserver)
        self.assertIsInstance(observer, logs.StreamObserver)
        self.assertIn(service, list(IService(application)))

    def test_existingObserverWins(self) -> None:
        """
        An observer already set on the application is left alone.
        """
        application = Application("marconi")
        mine = Capture()
        application.setComponent(ILogObserver, mine)
        wiring.ObservedNode(MultiService(), Capture()).setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), mine)

    def test_noDriverNoObserver(self) -> None:
        """
        Without a logging driver the node is returned as it is: twistd's
        own --logfile and --syslog apply.
        """
        options = tap.Options()
        options.parseOptions(["--storage", "sqlite::memory:", "--listen", "tcp:0"])
        node = tap.makeService(options, reactor)
        self.assertNotIsInstance(node, wiring.ObservedNode)

    def test_badSettings(self) -> None:
        """
        An unknown driver (naming the known ones) or a bad setting is a
        usage error.
        """
        for text, words in [
            ("[logging]\ndriver = carrier-pigeon\n", ["file", "stdout", "syslog"]),
            ("[logging]\ndriver = file\n", ["path"]),
            ("[logging]\naccess_log = maybe\n", ["access_log"]),
            ("[logging]\nflush_interval = soon\n", ["flush_interval"]),
        ]:
            options = tap.Options()
            e = self.assertRaises(
                UsageError,
                options.parseOptions,
                ["--storage", "sqlite::memory:", "--config", self.configFile(text)],
            )
            for word in words:
                self.assertIn(word, str(e))

    def test_configSections(self) -> None:
        """
        The C{[logging]} and C{[monitoring]} sections land in the
        configuration as they are.
        """
        from marconi import config as configuration

        loaded = configuration.load(
            self.configFile(
                "[logging]\ndriver = file\npath = x.log\n"
                "[monitoring]\ndriver = prometheus\nlisten = tcp:0\n  unix:m.sock\n"
            ),
            {},
        )
        self.assertEqual(dict(loaded.logging), {"driver": "file", "path": "x.log"})
        self.assertEqual(loaded.monitoring["listen"], "tcp:0\nunix:m.sock")
        self.assertEqual(Config().logging, {})


class TimestampTests(SynchronousTestCase):
    def test_sameAsTwisted(self) -> None:
        """
        The text line of an event is the one twisted.logger's classic text
        format gives, whatever the time within a second, across seconds
        and without a time.
        """
        from twisted.logger import LogLevel, formatEventAsClassicLogText

        for when in (
            1700000000.0,
            1700000000.999,
            # Rounds up to the next second, then a time before it.
            1700000000.9999997,
            1700000000.5,
            1700000001.0,
            0.5,
            -1.5,
            None,
        ):
            event = {
                "log_format": "x {a}",
                "a": 1,
                "log_time": when,
                "log_namespace": "n",
                "log_level": LogLevel.info,
            }
            self.assertEqual(
                logs.lineFormatter("text")(event), formatEventAsClassicLogText(event)
            )

    def test_withoutFieldsSameAsTwisted(self) -> None:
        """
        An event whose format names no field (an access line is one) has
        the same text line as twisted.logger gives it, with or without a
        namespace, level, system or failure, over several lines, and with
        escaped braces.
        """
        from twisted.logger import LogLevel, formatEventAsClassicLogText

        base = {"log_time": 1700000000.25, "log_namespace": "marconi.access"}
        for extra in (
            {"log_format": "GET /v2/ping 204", "log_level": LogLevel.info},
            {"log_format": "one\ntwo", "log_level": LogLevel.warn},
            {"log_format": "no level"},
            {"log_format": "no namespace", "log_namespace": None},
            {"log_format": "system", "log_system": "sys"},
            {"log_format": "GET /{{x}} 404", "log_level": LogLevel.info},
            {"log_format": "", "log_level": LogLevel.info},
            {"log_format": b"bytes", "log_level": LogLevel.info},
            {"log_format": "failed", "log_failure": failureEvent()["log_failure"]},
        ):
            event = dict(base, **extra)
            if extra.get("log_namespace", "") is None:
                del event["log_namespace"]
            self.assertEqual(
                logs.lineFormatter("text")(event),
                formatEventAsClassicLogText(event),
                extra,
            )


class AccessLogTests(TestCase):
    def setUp(self) -> None:
        self.node = Node(self, limits=Limits(maxMessagesPostSize=4096))
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def access(self):
        return [e for e in self.events if e.get("log_namespace") == "marconi.access"]

    async def test_oneLinePerRequest(self) -> None:
        """
        Each answered request is one C{marconi.access} event with the
        request id (the one the client got), project, method, path, status,
        duration and route.
        """
        r = await self.node.request(
            "POST", "/v2/queues/q/messages", {"messages": [{"body": 1}]}
        )
        [event] = self.access()
        self.assertEqual(event["request_id"], r.header("x-openstack-request-id"))
        self.assertEqual(
            (event["project"], event["method"], event["path"], event["status"]),
            ("p", "POST", "/v2/queues/q/messages", 201),
        )
        self.assertEqual(event["route"], "postMessages")
        self.assertGreaterEqual(event["duration"], 0)
        await self.node.request("GET", "/v2/nowhere", project=None)
        event = self.access()[-1]
        self.assertEqual(
            (event["route"], event["project"], event["status"]), ("unmatched", "-", 404)
        )

    async def test_eventAsLoggerMakesIt(self) -> None:
        """
        The access event has the keys a L{Logger.info} event has (so every
        observer and filter takes it as one), stamped with the site's clock.
        """
        from twisted.logger import LogLevel

        from marconi.api.http import accessLog

        before = reactor.seconds()
        await self.node.request("GET", "/v2/ping")
        [event] = self.access()
        [reference] = events(("info", "x", {}))
        self.assertLessEqual(set(reference), set(event))
        self.assertIs(event["log_logger"], accessLog)
        self.assertIs(event["log_level"], LogLevel.info)
        self.assertIsNone(event["log_source"])
        self.assertTrue(before <= event["log_time"] <= reactor.seconds())

    async def test_noSecrets(self) -> None:
        """
        Neither bodies, nor the X-Auth-Token, URL-Signature or cluster
        signature headers, nor query strings (claim ids, signatures) reach
        the access log, in text or JSON.
        """
        secrets = {
            "X-Auth-Token": "token-SECRET1",
            "URL-Signature": "sig-SECRET2",
            "X-Marconi-Cluster-Signature": "cluster-SECRET3",
        }
        await self.node.request(
            "POST",
            "/v2/queues/q/messages?signature=SECRET4",
            {"messages": [{"body": {"card": "SECRET5"}}]},
            headers=secrets,
        )
        await self.node.request(
            "DELETE", "/v2/queues/q/messages/abc?claim_id=SECRET6", headers=secrets
        )
        access = self.access()
        self.assertEqual(len(access), 2)
        self.assertEqual(access[1]["path"], "/v2/queues/q/messages/abc")
        stream = io.StringIO()
        for fmt in ("text", "json"):
            observer = logs.makeStdout({"format": fmt}, stream)
            for event in self.events:
                observer(event)
        self.assertNotIn("SECRET", stream.getvalue())
        # The malformed URL-Signature is refused, and still logged without it.
        self.assertIn("/v2/queues/q/messages/abc 403", stream.getvalue())

    async def test_preformattedLine(self) -> None:
        """
        The access event's text is the access format filled with its
        fields, in text and JSON, also for a path with braces in it; the
        fields are on the event as well.
        """
        from twisted.logger import formatEvent

        from marconi.api.http import ACCESS_FORMAT
        from tests import rawhttp

        await rawhttp.exchange(
            self.node.port.getHost().port,
            b"GET /v2/{nowhere}/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        [event] = self.access()
        fields = {
            key: event[key]
            for key in (
                "method",
                "path",
                "status",
                "duration",
                "size",
                "project",
                "request_id",
                "route",
            )
        }
        self.assertEqual(fields["path"], "/v2/{nowhere}/x")
        line = ACCESS_FORMAT.format_map(fields)
        self.assertEqual(formatEvent(event), line)
        record = json.loads(logs.eventAsJSONLine(event))
        self.assertEqual(record["message"], line)
        self.assertEqual(record["path"], "/v2/{nowhere}/x")

    async def test_refusedCarriesRequestId(self) -> None:
        """
        A body refused before it is read (413) still answers with an
        X-OpenStack-Request-Id, and that id is logged.
        """
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.node.port.getHost().port
        )
        received: Deferred = Deferred()

        class Raw(Protocol):
            data = b""

            def connectionMade(self):
                self.transport.write(
                    b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 999999999\r\n\r\n"
                )

            def dataReceived(self, data):
                self.data += data

            def connectionLost(self, reason):
                received.callback(self.data)

        await connectProtocol(endpoint, Raw())
        answer = (await received).decode("latin-1")
        self.assertTrue(answer.startswith("HTTP/1.1 413"))
        [requestId] = [
            line.split(":", 1)[1].strip()
            for line in answer.split("\r\n")
            if line.lower().startswith("x-openstack-request-id:")
        ]
        self.assertTrue(requestId.startswith("req-"))
        self.assertIn(requestId, [e.get("request_id") for e in self.events])

    async def test_everyResponseHasRequestId(self) -> None:
        """
        Ping, health, the API, 404s and 405s all carry a fresh
        X-OpenStack-Request-Id.
        """
        ids = set()
        for method, path in [
            ("GET", "/v2/ping"),
            ("GET", "/v2/health"),
            ("GET", "/v2/queues"),
            ("GET", "/v2/nowhere"),
            ("POST", "/v2/queues/q/stats"),
            ("GET", "/"),
        ]:
            r = await self.node.request(method, path)
            requestId = r.header("x-openstack-request-id")
            self.assertTrue(requestId and requestId.startswith("req-"), (path, r.code))
            ids.add(requestId)
        self.assertEqual(len(ids), 6)

    async def test_accessLogOff(self) -> None:
        """
        C{access_log = false} turns the access events off.
        """
        self.node.site.accessLog = False
        await self.node.request("GET", "/v2/ping")
        self.assertEqual(self.access(), [])


def accessEvents(count):
    """
    C{count} real access log events, as L{marconi.api.http} makes them.
    """
    capture = Capture()
    log = Logger(namespace=logs.ACCESS_NAMESPACE, observer=capture)
    for i in range(count):
        log.info("GET /v2/ping 204 0.000100s 0B request_id=req-{i}", i=i)
    return capture.events


class BufferingTests(SynchronousTestCase):
    def buffered(self, interval=0.1):
        self.stream = io.StringIO()
        self.clock = Clock()
        observer = logs.makeStdout({}, self.stream)
        observer.startBuffering(self.clock, interval)
        return observer

    def test_accessLinesWaitForTheTimer(self) -> None:
        """
        While buffering, access lines are written together once the
        interval has passed since the first of them, and the timer is
        armed again by the next line only.
        """
        observer = self.buffered(0.1)
        first, second, third = accessEvents(3)
        observer(first)
        self.clock.advance(0.05)
        observer(second)
        self.assertEqual(self.stream.getvalue(), "")
        self.clock.advance(0.05)
        lines = self.stream.getvalue().splitlines()
        self.assertEqual(
            [line.split("request_id=")[1] for line in lines], ["req-0", "req-1"]
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])
        observer(third)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.stream.getvalue().splitlines()), 3)

    def test_otherEventsAtOnceInOrder(self) -> None:
        """
        An event of another namespace, a warning or an error is written at
        once, after the access lines kept before it, and the timer of those
        is cancelled.
        """
        observer = self.buffered()
        [access] = accessEvents(1)
        observer(access)
        for event in events(("warn", "Disk {state}", {"state": "slow"})):
            observer(event)
        lines = self.stream.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertIn("request_id=req-0", lines[0])
        self.assertIn("Disk slow", lines[1])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sizeLimit(self) -> None:
        """
        Once the kept lines pass L{logs.FLUSH_SIZE} characters they are
        written without waiting for the timer.
        """
        observer = self.buffered()
        written = 0
        for event in accessEvents(2000):
            observer(event)
            if self.stream.getvalue():
                break
            written += 1
        size = len(self.stream.getvalue())
        self.assertGreaterEqual(size, logs.FLUSH_SIZE)
        self.assertLess(size, logs.FLUSH_SIZE + 200)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertLess(written, 2000)

    def test_stopWritesAndUnbuffers(self) -> None:
        """
        L{logs.StreamObserver.stopBuffering} writes the kept lines, and
        later access lines are written at once.
        """
        observer = self.buffered()
        first, second = accessEvents(2)
        observer(first)
        observer.stopBuffering()
        self.assertEqual(len(self.stream.getvalue().splitlines()), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        observer(second)
        self.assertEqual(len(self.stream.getvalue().splitlines()), 2)

    def test_otherThreadsAtOnce(self) -> None:
        """
        An access event observed on another thread than the one that
        started the buffering (where the clock may not be used) is written
        at once, after the lines kept before it.  That thread leaves the
        clock's timer alone: it fires later with nothing to write.
        """
        observer = self.buffered()
        first, second = accessEvents(2)
        observer(first)
        [timer] = self.clock.getDelayedCalls()
        thread = threading.Thread(target=observer, args=(second,))
        thread.start()
        thread.join()
        self.assertEqual(len(self.stream.getvalue().splitlines()), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [timer])
        self.assertTrue(timer.active())
        self.clock.advance(0.1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.stream.getvalue().splitlines()), 2)
        observer(first)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_eventDuringWrite(self) -> None:
        """
        An event logged while the observer is writing, on the same thread
        (a signal handler: twistd logs SIGTERM from one), is written after
        what was being written instead of waiting for it for ever.
        """
        [during] = events(("info", "Received SIGTERM, shutting down.", {}))
        observer = None

        class Interrupted(io.StringIO):
            nested = False

            def write(self, text):
                written = super().write(text)
                if not self.nested:
                    self.nested = True
                    observer(during)
                return written

        self.stream = Interrupted()
        observer = logs.makeStdout({}, self.stream)
        [before] = events(("info", "Stopping", {}))
        thread = threading.Thread(target=observer, args=(before,), daemon=True)
        thread.start()
        thread.join(10)
        self.assertFalse(thread.is_alive())
        lines = self.stream.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertIn("Stopping", lines[0])
        self.assertIn("SIGTERM", lines[1])

    def test_binaryStream(self) -> None:
        """
        A binary stream (a L{LogFile}) gets the lines in UTF-8.
        """
        path = self.mktemp()
        observer = logs.makeFile({"path": path})
        observer.startBuffering(Clock(), 0.1)
        for event in events(("info", "Caf\N{LATIN SMALL LETTER E WITH ACUTE}", {})):
            observer(event)
        observer.close()
        with open(path, encoding="utf-8") as f:
            self.assertIn("Caf\N{LATIN SMALL LETTER E WITH ACUTE}", f.read())

    def test_flushInterval(self) -> None:
        """
        C{flush_interval} is a number of seconds from 0 to 10, 0.1 by
        default; other values are refused, by every driver.
        """
        self.assertEqual(logs.flushInterval({}), 0.1)
        self.assertEqual(logs.flushInterval({"flush_interval": "0"}), 0.0)
        self.assertEqual(logs.flushInterval({"flush_interval": " 2.5 "}), 2.5)
        for bad in ("-1", "11", "soon"):
            self.assertRaises(ValueError, logs.flushInterval, {"flush_interval": bad})
        logs.checkStdout({"flush_interval": "0.5"})
        logs.checkFile({"path": self.mktemp(), "flush_interval": "0.5"})


class _Answered:
    """
    An answered request as L{MarconiSite.log} reads it.
    """

    route = "postMessages"
    code = 201
    started = 99.5
    forwarded = False
    project = "p{x}"
    method = b"POST"
    path = b"/v2/queues/q\n{1}/messages"
    sentLength = 120
    requestId = "req-own"

    def __init__(self) -> None:
        self.responseHeaders = Headers()


class AccessLinesTests(SynchronousTestCase):
    """
    A site logging to a L{logs.StreamObserver} that is the only observer
    gives it each access line as a line: the lines written are those of the
    events it would be given otherwise, kept and written the same way.
    """

    def lines(self, observers: list, fmt: str = "text") -> tuple:
        """
        Log two requests through a site whose access log's only observers
        are C{observers} and a buffering stream observer in C{fmt}; return
        what the stream holds before and after the flush interval.
        """
        stream = io.StringIO()
        clock = Clock()
        clock.advance(100)
        observer = logs.makeStdout({"format": fmt}, stream)
        observer.startBuffering(clock, 0.1)
        publisher = LogPublisher(observer, *observers)
        self.patch(
            http, "accessLog", Logger(namespace="marconi.access", observer=publisher)
        )
        site = MarconiSite(Resource(), 100, reactor=clock)
        for _ in range(2):
            site.log(_Answered())
        before = stream.getvalue()
        clock.advance(0.1)
        return before, stream.getvalue()

    def test_sameAsEvents(self) -> None:
        """
        The lines kept as lines are the text lines of the access events
        (another observer makes the site log events), kept until the
        flush interval has passed.
        """
        alone = logs.makeStdout({}, io.StringIO())
        keep = http._lineKeeper(Logger(observer=LogPublisher(alone)))
        self.assertEqual(keep, alone.keepAccessLine)
        seen: list = []
        self.assertIsNone(
            http._lineKeeper(Logger(observer=LogPublisher(alone, seen.append)))
        )
        asLines = self.lines([])
        asEvents = self.lines([seen.append])
        self.assertEqual(len(seen), 2)
        self.assertEqual(asLines, asEvents)
        self.assertEqual(asLines[0], "")
        lines = asLines[1].splitlines()
        self.assertEqual(len(lines), 2)
        self.assertEqual(
            lines[0],
            "1970-01-01T00:01:40+0000 [marconi.access#info] POST "
            "/v2/queues/q\\n{1}/messages 201 0.500000s 120B project=p{x} "
            "request_id=req-own route=postMessages",
        )

    def test_jsonEvents(self) -> None:
        """
        An observer writing JSON is given events, with their fields.
        """
        _, written = self.lines([], fmt="json")
        records = [json.loads(line) for line in written.splitlines()]
        self.assertEqual([r["request_id"] for r in records], ["req-own"] * 2)
        self.assertEqual(records[0]["path"], "/v2/queues/q\\n{1}/messages")

    def test_failingStream(self) -> None:
        """
        A stream that fails to write (a full disk) fails no request: the
        failure is logged.
        """

        class Full(io.StringIO):
            def write(self, text: str) -> int:
                raise OSError(28, "No space left on device")

        clock = Clock()
        observer = logs.makeStdout({}, Full())
        observer.startBuffering(clock, 0.1)
        publisher = LogPublisher(observer)
        self.patch(
            http, "accessLog", Logger(namespace="marconi.access", observer=publisher)
        )
        failures: list = []
        self.patch(http, "_log", Logger(observer=failures.append))
        site = MarconiSite(Resource(), 100, reactor=clock)
        for _ in range(2 * logs.FLUSH_SIZE // 100):
            site.log(_Answered())
        self.assertTrue(failures)
        self.assertTrue(all(f["log_failure"].check(OSError) for f in failures))

    def test_lineOfLines(self) -> None:
        """
        A line holding a newline is written as an event's text is: the
        rest indented on the next line.
        """
        stream = io.StringIO()
        observer = logs.makeStdout({}, stream)
        observer.startBuffering(Clock(), 0.1)
        observer.keepAccessLine("a\nb", 100.0)
        observer.stopBuffering()
        [event] = accessEvents(1)
        event.update(log_format="a\nb", log_time=100.0)
        other = io.StringIO()
        logs.makeStdout({}, other)(event)
        self.assertEqual(stream.getvalue(), other.getvalue())
        self.assertIn("a\n\tb\n", stream.getvalue())

    def test_otherThread(self) -> None:
        """
        On another thread than the one keeping lines, no line is kept: the
        caller logs an event, written at once.
        """
        stream = io.StringIO()
        observer = logs.makeStdout({}, stream)
        observer.startBuffering(Clock(), 0.1)
        kept: list = []
        thread = threading.Thread(
            target=lambda: kept.append(observer.keepAccessLine("a line", 100.0))
        )
        thread.start()
        thread.join()
        self.assertEqual(kept, [False])
        self.assertEqual(stream.getvalue(), "")

    def test_notBuffering(self) -> None:
        """
        A stream observer that does not keep lines (stopped) writes each
        line at once, as it writes an event.
        """
        stream = io.StringIO()
        observer = logs.makeStdout({}, stream)
        self.assertFalse(observer.keepAccessLine("a line", 100.0))
        observer.startBuffering(Clock(), 0.1)
        self.assertTrue(observer.keepAccessLine("a line", 100.0))
        self.assertEqual(stream.getvalue(), "")
        observer.stopBuffering()
        self.assertEqual(
            stream.getvalue(),
            "1970-01-01T00:01:40+0000 [marconi.access#info] a line\n",
        )
        self.assertFalse(observer.keepAccessLine("a line", 100.0))


class ObservedNodeTests(SynchronousTestCase):
    def test_buffersWhileRunning(self) -> None:
        """
        An L{wiring.ObservedNode} makes its stream observer buffer from its
        start, and write what it kept once its services have stopped, even
        when they stop later.
        """
        stream = io.StringIO()
        clock = Clock()
        observer = logs.makeStdout({}, stream)
        stopping: Deferred = Deferred()

        class Slow(Service):
            def stopService(self):
                super().stopService()
                return stopping

        node = wiring.ObservedNode(Slow(), observer, clock, 0.5)
        node.startService()
        first, second = accessEvents(2)
        observer(first)
        self.assertEqual(stream.getvalue(), "")
        stopped = node.stopService()
        observer(second)
        self.assertEqual(stream.getvalue(), "")
        stopping.callback(None)
        self.successResultOf(stopped)
        self.assertEqual(len(stream.getvalue().splitlines()), 2)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_intervalZero(self) -> None:
        """
        With a flush interval of 0 nothing is kept.
        """
        stream = io.StringIO()
        observer = logs.makeStdout({}, stream)
        node = wiring.ObservedNode(MultiService(), observer, Clock(), 0.0)
        node.startService()
        for event in accessEvents(1):
            observer(event)
        self.assertEqual(len(stream.getvalue().splitlines()), 1)


class ThreadCallsReactor(MemoryReactorClock):
    """
    A memory reactor that keeps what is handed to it from other threads
    (and signal handlers).
    """

    def __init__(self):
        super().__init__()
        self.threadCalls = []

    def callFromThread(self, f, *args, **kwargs):
        self.threadCalls.append((f, args, kwargs))


class TwistdObserverTests(SynchronousTestCase):
    def twistdOptions(self, *argv, node=()):
        from twisted.scripts.twistd import ServerOptions

        options = ServerOptions()
        options.parseOptions([*argv, "marconi", "--storage", "sqlite::memory:", *node])
        return options

    def setUp(self) -> None:
        import signal

        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    def test_logfile(self) -> None:
        """
        With C{--logfile} the observer writes twistd's text lines to that
        file; C{SIGUSR1} rotates it, after writing the kept lines.
        """
        import signal

        path = os.path.abspath(self.mktemp())
        clock = ThreadCallsReactor()
        observer = logs.twistdObserver(self.twistdOptions("--logfile", path), clock)
        self.addCleanup(observer.close)
        observer.startBuffering(clock, 0.1)
        [access] = accessEvents(1)
        observer(access)
        signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)
        [(rotate, args, kwargs)] = clock.threadCalls
        rotate(*args, **kwargs)
        with open(path + ".1", encoding="utf-8") as f:
            text = f.read()
        self.assertIn("[marconi.access#info] GET /v2/ping 204", text)
        self.assertEqual(os.path.getsize(path), 0)

    def test_stdout(self) -> None:
        """
        C{-n} without C{--logfile} (or with C{--logfile=-}) writes to
        standard output.
        """
        for argv in (["-n"], ["-n", "--logfile=-"]):
            observer = logs.twistdObserver(
                self.twistdOptions(*argv), MemoryReactorClock()
            )
            self.assertIs(observer._stream, sys.stdout)

    def test_twistdKeepsItsOwn(self) -> None:
        """
        Outside twistd, and with C{--logger}, C{--syslog}, C{--debug} or a
        daemon told to log to standard output, twistd's observer stays.
        """
        clock = MemoryReactorClock()
        self.assertIsNone(logs.twistdObserver(None, clock))
        for argv in (
            ["--logger", "marconi.observability.logs.stdoutText"],
            ["--syslog"],
            ["--logfile=-"],
        ):
            self.assertIsNone(logs.twistdObserver(self.twistdOptions(*argv), clock))
        # As --debug sets it (parsing --debug here would start pdb on the
        # next failure of every test in this process).
        debug = self.twistdOptions("-n")
        debug["debug"] = True
        self.assertIsNone(logs.twistdObserver(debug, clock))

    def test_makeService(self) -> None:
        """
        Run by twistd without a logging driver, the node comes inside an
        L{wiring.ObservedNode} with the buffering observer; with
        C{flush_interval = 0} twistd's own observer stays.
        """
        options = self.twistdOptions("-n").subOptions
        node = tap.makeService(options, MemoryReactorClock())
        self.assertIsInstance(node, wiring.ObservedNode)
        self.assertIsInstance(node.logObserver, logs.StreamObserver)
        self.assertEqual(node.flushInterval, 0.1)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[logging]\nflush_interval = 0\n")
        options = self.twistdOptions("-n", node=["--config", path]).subOptions
        self.assertNotIsInstance(
            tap.makeService(options, MemoryReactorClock()), wiring.ObservedNode
        )


class RealNodeTests(TestCase):
    """
    The access log of a real C{twistd -n --logfile PATH marconi} process,
    which has no logging driver.
    """

    async def post(self, node, count):
        """
        Post C{count} times, each on its own connection; the request ids.
        """
        from tests import rawhttp

        ids = []
        for i in range(count):
            body = b'{"messages": [{"body": %d}]}' % i
            answer = await rawhttp.exchange(
                node.port,
                b"POST /v2/queues/logged/messages HTTP/1.1\r\nHost: x\r\n"
                b"X-Project-ID: p\r\nClient-ID: 3381af92-2b9e-11e3-b191-71861300734c\r\n"
                b"Content-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
            )
            self.assertTrue(answer.startswith(b"HTTP/1.1 201"), answer)
            [requestId] = [
                line.split(b":", 1)[1].strip().decode()
                for line in answer.split(b"\r\n")
                if line.lower().startswith(b"x-openstack-request-id:")
            ]
            ids.append(requestId)
        return ids

    async def test_linesReachTheFile(self) -> None:
        """
        Each request's access line reaches the log file (within the flush
        interval) in twistd's text format, without stopping the node.
        """
        from twisted.internet.task import deferLater

        from tests.nodeprocess import startNode

        node = await startNode(self)
        ids = await self.post(node, 3)
        for _ in range(200):
            if all(i in node.log() for i in ids):
                break
            await deferLater(reactor, 0.05, lambda: None)
        lines = [line for line in node.log().splitlines() if "request_id=req-" in line]
        self.assertEqual(
            [line.rsplit("request_id=")[1].split()[0] for line in lines], ids
        )
        for line in lines:
            self.assertRegex(
                line,
                r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[marconi\.access#info\] "
                r"POST /v2/queues/logged/messages 201 ",
            )

    async def waitFor(self, condition, what):
        from twisted.internet.task import deferLater

        for _ in range(400):
            if condition():
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"not seen: {what}")

    async def test_sigusr1Rotates(self) -> None:
        """
        SIGUSR1 rotates the log file, as twistd's own observer does: the
        lines before it are in C{PATH.1}, the later ones in C{PATH}.
        """
        from tests.nodeprocess import startNode

        node = await startNode(self)
        [first] = await self.post(node, 1)
        await self.waitFor(lambda: first in node.log(), first)
        import signal

        # signalProcess knows HUP, INT, KILL and TERM by name only.
        node.signal(signal.SIGUSR1)
        rotated = node.logPath + ".1"
        await self.waitFor(lambda: os.path.exists(rotated), rotated)
        [second] = await self.post(node, 1)
        await self.waitFor(lambda: second in node.log(), second)
        with open(rotated, encoding="utf-8") as f:
            old = f.read()
        self.assertIn(first, old)
        self.assertNotIn(second, old)
        self.assertNotIn(first, node.log())

    async def test_stopWritesKeptLines(self) -> None:
        """
        With a long C{flush_interval} the lines wait; SIGTERM stops the
        node, which writes them before its last lines.
        """
        from tests.nodeprocess import startNode

        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            f.write("[logging]\nflush_interval = 10\n")
        node = await startNode(self, "--config", config)
        ids = await self.post(node, 3)
        self.assertFalse(any(i in node.log() for i in ids), node.log())
        reason = await node.stop()
        self.assertTrue(node.exitedCleanly(reason), node.log())
        log = node.log()
        positions = [log.index(i) for i in ids]
        self.assertEqual(positions, sorted(positions))
        self.assertLess(positions[-1], log.index("Server Shut Down"))
