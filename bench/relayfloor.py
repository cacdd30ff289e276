"""
The floor of a relaying node on this machine: the CPU per request of the
least a Twisted process can do to relay a request, against which the
pass-through (L{marconi.api.passthrough}) is measured.

An upstream process answers every request as a node of a cluster answers
a post 1 (C{201}), a list 10 (C{200}, a body of 10 messages) or a claim
10 (C{201}, 10 messages), by its request line, with the headers a node
writes (and C{GET /v2/ping} with C{204}).  In front of it, one of:

 - C{bare}: a Twisted protocol per client connection, each with its own
   connection upstream, that writes whatever arrives on one to the other
   (no parsing at all: two receives, two sends and the reactor's turns);
 - C{pool}: the same, but each request is read up to the end of its body
   and sent on a connection taken from a pool, and the answer read up to
   the end of its body before it is written back (what any HTTP relay
   must do at least);
 - C{web}: not a relay, a bare twisted.web resource that answers the same
   C{201} itself (a twisted.web request, for scale).

The load is the benchmarks' driver (L{driver.Client}): 16 keep-alive
connections sending the same C{post 1} as C{bench/cluster.py cost}.  The
relay and the upstream are pinned to C{--server-cpus}, as the nodes of
C{bench/cluster.py}; run this on C{--client-cpus} (C{taskset -c 1}).

::

    taskset -c 1 python bench/relayfloor.py --requests 20000
"""

import argparse
import asyncio
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

BODY = b'{"resources": ["/v2/queues/q/messages/5f1e8c1a2b3c4d5e6f708192"]}'
#: The head of every answer, as a node of a cluster writes it.
_HEAD = (
    b"HTTP/1.1 %s\r\nX-Openstack-Request-Id: req-0123456789abcdef0123456789abcdef\r\n"
    b"X-Marconi-Ring-Version: 84130f4df6bd47d5\r\nServer: TwistedWeb/26.10.0\r\n"
    b"Date: Tue, 01 Dec 2026 12:00:00 GMT\r\n"
)
ANSWER = (
    (_HEAD % b"201 Created")
    + b"Location: /v2/queues/q/messages?ids=5f1e8c1a2b3c4d5e6f708192\r\n"
    b"Content-Type: application/json; charset=UTF-8\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BODY)
) + BODY


def _message(i: int, href: bytes, query: bytes = b"") -> bytes:
    """
    A message of ten as a node lists or claims it (the body of a post 1
    of the benchmarks).
    """
    ident = b"01a2327977e7%020x" % (i * 7919)
    return (
        b'{"id":"%s","href":"%s%s%s","ttl":3600,"age":0,"body":{"event":"bench",'
        b'"n":%d,"payload":"%s"},"checksum":"MD5:970bf10d15a6905e514cfc024b2ad1ef"}'
        % (ident, href, ident, query, i, b"x" * 64)
    )


#: A list 10 (C{GET .../messages?...}) and a claim 10 (C{POST .../claims})
#: answered as a node answers them: a body over the compression threshold,
#: hence C{Vary: Accept-Encoding}.
LIST_BODY = (
    b'{"messages":['
    + b",".join(_message(i, b"/v2/queues/q/messages/") for i in range(10))
    + b'],"links":[{"rel":"next","href":"/v2/queues/q/messages?marker=10&limit=10'
    b'&echo=true"}]}'
)
LIST_ANSWER = (
    (_HEAD % b"200 OK") + b"Content-Type: application/json; charset=UTF-8\r\n"
    b"Vary: Accept-Encoding\r\nContent-Length: %d\r\n\r\n" % len(LIST_BODY)
) + LIST_BODY
CLAIM_BODY = (
    b"["
    + b",".join(
        _message(i, b"/v2/queues/q/messages/", b"?claim_id=5f1e8c1a2b3c4d5e6f708193")
        for i in range(10)
    )
    + b"]"
)
CLAIM_ANSWER = (
    (_HEAD % b"201 Created")
    + b"Location: /v2/queues/q/claims/5f1e8c1a2b3c4d5e6f708193\r\n"
    b"Content-Type: application/json; charset=UTF-8\r\n"
    b"Vary: Accept-Encoding\r\nContent-Length: %d\r\n\r\n" % len(CLAIM_BODY)
) + CLAIM_BODY
PING = b"HTTP/1.1 204 No Content\r\n\r\n"


def _whole(buffer: bytes) -> int:
    """
    The length of the first whole message (head and body, delimited by
    its C{Content-Length}) in C{buffer}, or 0.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return 0
    head = buffer[:end].lower()
    at = head.find(b"\r\ncontent-length:")
    length = int(head[at + 17 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
    total = end + 4 + length
    return total if len(buffer) >= total else 0


def answerTo(request: bytes) -> bytes:
    """
    The upstream's answer to C{request}: by its request line, a probe's,
    a list 10's, a claim 10's, or else a post 1's.
    """
    line = request[: request.find(b"\r\n")]
    if line.startswith(b"GET /v2/ping "):
        return PING
    if line.startswith(b"GET ") and b"/messages?" in line:
        return LIST_ANSWER
    if line.startswith(b"POST ") and b"/claims" in line:
        return CLAIM_ANSWER
    return ANSWER


def serveUpstream(port: int) -> None:
    from twisted.internet import protocol, reactor

    class Upstream(protocol.Protocol):
        buffer = b""

        def dataReceived(self, data: bytes) -> None:
            self.buffer += data
            while True:
                size = _whole(self.buffer)
                if not size:
                    return
                request, self.buffer = self.buffer[:size], self.buffer[size:]
                self.transport.write(answerTo(request))

    factory = protocol.Factory.forProtocol(Upstream)
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    reactor.run()


def serveRelay(port: int, upstream: int, kind: str) -> None:
    from twisted.internet import protocol, reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint

    if kind == "web":
        from twisted.web import resource, server

        class Answer(resource.Resource):
            isLeaf = True

            def render(self, request):
                request.setResponseCode(201)
                request.setHeader(b"content-type", b"application/json; charset=UTF-8")
                return BODY

        site = server.Site(Answer())
        site.log = lambda request: None
        reactor.listenTCP(port, site, interface="127.0.0.1")
        reactor.run()
        return

    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", upstream)
    idle: list = []

    class Up(protocol.Protocol):
        client = None
        buffer = b""

        def dataReceived(self, data: bytes) -> None:
            if kind == "bare":
                self.client.transport.write(data)
                return
            self.buffer += data
            size = _whole(self.buffer)
            if not size:
                return
            answer, self.buffer = self.buffer[:size], b""
            client, self.client = self.client, None
            idle.append(self)
            client.transport.write(answer)
            client.answered()

    class Down(protocol.Protocol):
        up = None
        buffer = b""

        def connectionMade(self) -> None:
            if kind == "bare":
                self.transport.pauseProducing()
                endpoint.connect(protocol.Factory.forProtocol(Up)).addCallback(
                    self._connected
                )

        def _connected(self, up) -> None:
            self.up = up
            up.client = self
            self.transport.resumeProducing()

        def dataReceived(self, data: bytes) -> None:
            if kind == "bare":
                self.up.transport.write(data)
                return
            self.buffer += data
            self._next()

        def _next(self) -> None:
            size = _whole(self.buffer)
            if not size or self.up is not None:
                return
            request, self.buffer = self.buffer[:size], self.buffer[size:]
            if idle:
                self._send(idle.pop(), request)
            else:
                self.up = True
                endpoint.connect(protocol.Factory.forProtocol(Up)).addCallback(
                    self._send, request
                )

        def _send(self, up, request: bytes) -> None:
            up.client = self
            self.up = up
            up.transport.write(request)

        def answered(self) -> None:
            self.up = None
            self._next()

    factory = protocol.Factory.forProtocol(Down)
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    reactor.run()


async def load(port: int, requests: int, users: int, pid: int) -> float:
    """
    Send C{requests} requests over C{users} connections; the CPU of the
    process C{pid} per request, in µs.
    """
    from driver import Client, messagesBody, processesCPU

    loop = asyncio.get_running_loop()
    clients = [
        Client(loop, "127.0.0.1", port, "bench", "3f2e4d5c-1b2a-4c3d-9e8f", 30)
        for _ in range(users)
    ]
    data = clients[0].build(b"POST", b"/v2/queues/q0/messages", messagesBody(1))
    for client in clients:
        await client.send(data)
    left = requests

    async def user(client) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status, _ = await client.send(data)
            assert status == 201, status

    before = processesCPU([pid])
    await asyncio.gather(*(user(client) for client in clients))
    after = processesCPU([pid])
    for client in clients:
        client.close()
    return 1e6 * (after - before) / requests


def main() -> None:
    from run import freePort, pinned, waitForPort

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--kinds", default="bare,pool,web")
    parser.add_argument("--server-cpus", default="0")
    options = parser.parse_args()
    upstreamPort = freePort()
    upstream = subprocess.Popen(
        pinned(
            options.server_cpus,
            [sys.executable, __file__, "--upstream", str(upstreamPort)],
        )
    )
    try:
        waitForPort(upstreamPort, upstream, time.monotonic() + 60)
        for kind in options.kinds.split(","):
            runs = []
            for _ in range(options.repeat):
                port = freePort()
                relay = subprocess.Popen(
                    pinned(
                        options.server_cpus,
                        [
                            sys.executable,
                            __file__,
                            "--relay",
                            f"{port}:{upstreamPort}:{kind}",
                        ],
                    )
                )
                try:
                    waitForPort(port, relay, time.monotonic() + 60)
                    runs.append(
                        asyncio.run(
                            load(port, options.requests, options.users, relay.pid)
                        )
                    )
                finally:
                    relay.kill()
                    relay.wait()
            print(
                f"{kind:5} {sorted(runs)[len(runs) // 2]:6.1f} µs/request "
                f"(runs {', '.join(f'{r:.1f}' for r in runs)})",
                flush=True,
            )
    finally:
        upstream.kill()
        upstream.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--upstream"]:
        serveUpstream(int(sys.argv[2]))
    elif sys.argv[1:2] == ["--relay"]:
        port, upstream, kind = sys.argv[2].split(":")
        serveRelay(int(port), int(upstream), kind)
    else:
        main()
