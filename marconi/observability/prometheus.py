"""
The C{prometheus} monitoring driver: Prometheus metrics kept with
prometheus-client, served at C{/metrics} on a listener of their own (and,
if asked, on the API listeners).

Each monitor has its own registry, so nothing is global.  On the hot path
a measurement is two dictionary lookups (cached label children, created
once per label value) and the client's own locked increments.
"""

from typing import Mapping, Optional, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site
from zope.interface import implementer

from marconi.core.interfaces import MESSAGE_EVENTS, IMonitor
from marconi.core.models import QueueDepth
from marconi.observability import settings as monitoringSettings

log = Logger()

#: Seconds; from a cached ping to a slow claim under load.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class MetricsResource(Resource):
    """
    Renders a registry in the Prometheus text format.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: IRequest) -> bytes:
        body = generate_latest(self._registry)
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"content-length", b"%d" % len(body))
        return body


@implementer(IMonitor)
class PrometheusMonitor(MultiService):
    """
    An L{IMonitor} keeping Prometheus metrics.

    @param listen: endpoint descriptions to serve C{/metrics} on.
    @param public: whether the API listeners serve C{/metrics} too.
    """

    def __init__(
        self, reactor: IReactorTime, listen: Sequence[str] = (), public: bool = False
    ) -> None:
        super().__init__()
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "marconi_http_requests",
            "HTTP requests answered, by API route and status code.",
            ["route", "status"],
            registry=registry,
        )
        self.requestLatency = Histogram(
            "marconi_http_request_duration_seconds",
            "Time from a request's headers to the end of its response.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.messages = Counter(
            "marconi_messages",
            "Messages posted, claimed, deleted, expired and dead-lettered.",
            ["event"],
            registry=registry,
        )
        self.storageLatency = Histogram(
            "marconi_storage_duration_seconds",
            "Time of storage driver calls, by operation.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.storageErrors = Counter(
            "marconi_storage_errors",
            "Storage driver calls that failed, by operation.",
            ["operation"],
            registry=registry,
        )
        self.queueMessages = Gauge(
            "marconi_queue_messages",
            "Live messages in the deepest queues (sampled).",
            ["project", "queue"],
            registry=registry,
        )
        self.queueClaimed = Gauge(
            "marconi_queue_claimed_messages",
            "Claimed messages in the deepest queues (sampled).",
            ["project", "queue"],
            registry=registry,
        )
        self.forwardingErrors = Counter(
            "marconi_forwarding_errors",
            "Requests that could not be forwarded to a cluster node, by node.",
            ["peer"],
            registry=registry,
        )
        self._requestChildren: dict = {}
        self._latencyChildren: dict = {}
        self._messageChildren = {e: self.messages.labels(e) for e in MESSAGE_EVENTS}
        self._storageChildren: dict = {}
        self._storageErrorChildren: dict = {}
        self._peerChildren: dict = {}
        self.resource = MetricsResource(registry)
        self._public = public
        if listen:
            root = Resource()
            root.putChild(b"metrics", self.resource)
            site = Site(root, reactor=reactor)
            site.displayTracebacks = False
            for description in listen:
                endpoint = _Announced(serverFromString(reactor, description))
                StreamServerEndpointService(endpoint, site).setServiceParent(self)

    # IMonitor.

    def requestServed(self, route: str, status: int, seconds: float) -> None:
        byStatus = self._requestChildren.get(route)
        if byStatus is None:
            byStatus = self._requestChildren[route] = {}
        counter = byStatus.get(status)
        if counter is None:
            counter = byStatus[status] = self.requests.labels(route, str(status))
        counter.inc()
        latency = self._latencyChildren.get(route)
        if latency is None:
            latency = self._latencyChildren[route] = self.requestLatency.labels(route)
        latency.observe(seconds)

    def messagesCounted(self, kind: str, count: int) -> None:
        counter = self._messageChildren.get(kind)
        if counter is None:
            log.error("Unknown message event {kind!r}", kind=kind)
            return
        counter.inc(count)

    def storageCall(self, operation: str, seconds: float, succeeded: bool) -> None:
        latency = self._storageChildren.get(operation)
        if latency is None:
            latency = self._storageChildren[operation] = self.storageLatency.labels(
                operation
            )
        latency.observe(seconds)
        if not succeeded:
            errors = self._storageErrorChildren.get(operation)
            if errors is None:
                errors = self._storageErrorChildren[operation] = (
                    self.storageErrors.labels(operation)
                )
            errors.inc()

    def queueDepths(self, depths: Sequence[QueueDepth]) -> None:
        self.queueMessages.clear()
        self.queueClaimed.clear()
        for depth in depths:
            self.queueMessages.labels(depth.project, depth.queue).set(depth.messages)
            self.queueClaimed.labels(depth.project, depth.queue).set(depth.claimed)

    def forwardingError(self, peer: str) -> None:
        counter = self._peerChildren.get(peer)
        if counter is None:
            counter = self._peerChildren[peer] = self.forwardingErrors.labels(peer)
        counter.inc()

    def publicResource(self) -> Optional[IResource]:
        return self.resource if self._public else None


@implementer(IStreamServerEndpoint)
class _Announced:
    """
    Logs the address the metrics listener got.
    """

    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        self._endpoint = endpoint

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        def announce(port: IListeningPort) -> IListeningPort:
            address = port.getHost()
            log.info(
                "Metrics listening on {kind}:{host}:{port}",
                kind=getattr(address, "type", "unix").lower(),
                host=getattr(address, "host", getattr(address, "name", "")),
                port=getattr(address, "port", ""),
            )
            return port

        return self._endpoint.listen(factory).addCallback(announce)


def makeMonitor(
    settings: Mapping[str, str], reactor: IReactorTime
) -> PrometheusMonitor:
    monitoringSettings.checkPrometheus(settings)
    return PrometheusMonitor(
        reactor,
        listen=monitoringSettings.listen(settings),
        public=monitoringSettings.boolean(settings, "public", False),
    )
