"""
What measuring a request costs on the hot path: the monitor calls the site
and the domain make per request, timed in a loop, and the memory they
allocate once their label children exist.

    PYTHONPATH=. python bench/monitor_hotpath.py
"""

import sys
import timeit
import tracemalloc

from twisted.internet import reactor

from marconi.api.http import MarconiSite
from marconi.core.monitoring import NullMonitor
from marconi.observability.prometheus import PrometheusMonitor

N = 200_000


def perCall(statement, namespace) -> float:
    best = min(timeit.repeat(statement, globals=namespace, number=N, repeat=5))
    return best / N * 1e9


def allocated(function, calls: int = 10_000) -> float:
    function()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(calls):
        function()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return grown / calls


class _Request:
    """
    What L{MarconiSite.log} reads of an answered request.
    """

    route = "postMessages_0"
    code = 201
    started = 1.0
    project = "demo"
    requestId = "req-0123456789abcdef0123456789abcdef"
    method = b"POST"
    path = b"/v2/queues/jobs/messages"
    sentLength = 160


def main() -> None:
    prometheus = PrometheusMonitor(reactor)
    null = NullMonitor()
    namespace = {"p": prometheus, "n": null}
    rows = [
        ("NullMonitor.requestServed", "n.requestServed('postMessages', 201, 0.003)"),
        ("Prometheus requestServed", "p.requestServed('postMessages', 201, 0.003)"),
        ("Prometheus messagesCounted", "p.messagesCounted('posted', 10)"),
        (
            "Prometheus storageCall",
            "p.storageCall('postMessages', 0.002, True)",
        ),
    ]
    print(f"Python {sys.version.split()[0]}, {N} calls each, best of 5")
    for name, statement in rows:
        print(f"  {name:52s} {perCall(statement, namespace):8.0f} ns/call")
    for monitor, access in ((null, False), (prometheus, False), (prometheus, True)):
        site = MarconiSite(None, 1024, reactor=reactor, monitor=monitor)
        site.accessLog = access
        namespace = {"site": site, "request": _Request()}
        cost = perCall("site.log(request)", namespace)
        what = f"Site.log, {type(monitor).__name__}, access log {'on' if access else 'off'}"
        print(f"  {what:52s} {cost:8.0f} ns/request")
    grown = allocated(lambda: prometheus.requestServed("postMessages", 201, 0.003))
    print(f"  net memory retained per requestServed: {grown:.2f} bytes")


if __name__ == "__main__":
    main()
