"""
The client side of a forwarded request alone: the CPU this process spends
per request sent to a peer and its answer read, by client.

A twisted.web server in a child process (pinned to C{--server-cpu}) answers
every request with a 300-byte body and a few headers; this process (pinned
to C{--client-cpu}) sends C{--requests} requests over C{--concurrency}
connections with each client in turn, C{--repeat} times, and prints the
median CPU per request:

 - C{treq}: C{treq.request} and C{treq.content}, as the design card has it;
 - C{agent}: L{PeerClient.call}, the Agent treq wraps, bodies read with
   C{treq.collect} (probes, listings, the ring);
 - C{wire}: L{PeerClient.forward} (L{marconi.cluster.wire}, forwarded
   requests).

::

    python bench/peerclient.py --requests 5000 --repeat 3
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

SERVER = """
import sys
from twisted.internet import reactor
from twisted.web import resource, server

class Answer(resource.Resource):
    isLeaf = True

    def render(self, request):
        request.content.read()
        request.setResponseCode(201)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"location", b"/v2/queues/q/messages?ids=1")
        return b"x" * 300

site = server.Site(Answer())
site.log = lambda request: None
port = reactor.listenTCP(0, site, interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--server-cpu", default="1")
    parser.add_argument("--client-cpu", default="0")
    options = parser.parse_args(argv)
    server = subprocess.Popen(
        ["taskset", "-c", options.server_cpu, sys.executable, "-c", SERVER],
        stdout=subprocess.PIPE,
    )
    try:
        port = int(server.stdout.readline())
        os.sched_setaffinity(0, {int(options.client_cpu)})
        results = run(options, port)
    finally:
        server.terminate()
        server.wait()
    print(f"load average: {os.getloadavg()}")
    for name, runs in results.items():
        cells = " ".join(f"{r:.0f}" for r in runs)
        print(f"{name:6} {statistics.median(runs):6.0f} us/request  ({cells})")
    return 0


def run(options, port: int) -> dict:
    import treq
    from twisted.internet import defer, reactor
    from twisted.web.http_headers import Headers

    from marconi.cluster.forward import PeerClient, target
    from marconi.cluster.settings import ClusterConfig, Peer

    url = f"http://127.0.0.1:{port}"
    peer = Peer("b", url)
    config = ClusterConfig(nodeName="a", nodes=(peer,), secret=b"s" * 32)
    client = PeerClient(config, reactor)
    path = target(b"/v2/queues/q/messages")
    body = b'{"messages": [{"ttl": 300, "body": {"n": 1}}]}'
    fullURL = (url + "/v2/queues/q/messages").encode()

    async def viaTreq():
        response = await treq.request(
            "POST", fullURL, data=body, headers={b"x-a": [b"1"]}, pool=client.pool
        )
        await treq.content(response)

    async def viaAgent():
        await client.call(peer, b"POST", path, Headers({b"x-a": [b"1"]}), body)

    async def viaWire():
        await client.forward(peer, b"POST", path, [(b"x-a", b"1")], body)

    clients = {"treq": viaTreq, "agent": viaAgent, "wire": viaWire}
    results: dict = {name: [] for name in clients}

    async def measure():
        for send in clients.values():
            await send()  # open the connections
        for _ in range(options.repeat):
            for name, send in clients.items():
                left = options.requests

                async def user(send=send):
                    nonlocal left
                    while left > 0:
                        left -= 1
                        await send()

                started = time.process_time()
                await defer.gatherResults(
                    [
                        defer.Deferred.fromCoroutine(user())
                        for _ in range(options.concurrency)
                    ]
                )
                spent = time.process_time() - started
                results[name].append(1e6 * spent / options.requests)

    done = []

    def finish(result):
        done.append(result)
        client.close().addBoth(lambda _: reactor.stop())

    defer.Deferred.fromCoroutine(measure()).addBoth(finish)
    reactor.run()
    if done and hasattr(done[0], "raiseException"):
        done[0].raiseException()
    return results


if __name__ == "__main__":
    sys.exit(main())
