"""
Mutual TLS between the nodes of a cluster: which listener takes forwarded
requests.

When the cluster speaks mutual TLS (C{--cluster-ca}, C{--node-cert},
C{--node-key}, C{--cluster-listen}), a node serves its API twice: on the
public listeners, for clients, and on the cluster listener, which takes
only connections presenting a node certificate of the cluster CA.  The two
get different views of the node's router:

 - L{PublicRouter} refuses every request carrying forwarding headers, even
   validly signed ones: forwarded traffic never arrives over a public
   listener.
 - L{NodeRouter} accepts a forwarded request only if it came over a
   verified node certificate and its signature names the node that
   certificate was issued to (the certificate's common name), so one node
   cannot pass its requests off as another's.
"""

from dataclasses import dataclass
from typing import Any, Optional

from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from zope.interface import implementer

from marconi import tls
from marconi.cluster import signing
from marconi.cluster.settings import ClusterConfigError
from marconi.core.errors import Forbidden
from marconi.core.interfaces import IRouter

log = Logger()


class _Delegating:
    def __init__(self, router: Any) -> None:
        self.router = router

    def route(self, project: str, queue: str) -> Optional[str]:
        return self.router.route(project, queue)

    def forward(self, request: Any, project: str, owner: str) -> Any:
        return self.router.forward(request, project, owner)

    def listQueues(self, *args: Any) -> Any:
        return self.router.listQueues(*args)

    def readAudit(self, *args: Any) -> Any:
        return self.router.readAudit(*args)

    def health(self) -> dict:
        return self.router.health()

    def publishedRing(self) -> dict:
        return self.router.publishedRing()


def _carriesForwarding(request: Any) -> bool:
    return any(
        name.lower().startswith(signing.PREFIX)
        for name, _ in request.requestHeaders.getAllRawHeaders()
    )


@implementer(IRouter)
class PublicRouter(_Delegating):
    """
    The router of a node's public listeners when its cluster speaks
    mutual TLS: requests are routed and forwarded as usual, but none
    received here may carry forwarding headers.
    """

    def verify(self, request: Any) -> Optional[str]:
        if _carriesForwarding(request):
            log.warn(
                "Refused forwarding headers on a public listener from {client}",
                client=str(request.getClientAddress()),
            )
            raise Forbidden(
                "Forwarded requests are taken only on the cluster listener, "
                "from a node certificate."
            )
        return None


@implementer(IRouter)
class NodeRouter(_Delegating):
    """
    The router of a node's cluster listener: the TLS handshake already
    required a node certificate of the cluster CA; a forwarded request must
    in addition be signed in the name of that certificate's node.
    """

    def verify(self, request: Any) -> Optional[str]:
        certificate = tls.peerCertificate(request)
        if certificate is None:
            # The listener requires one; this is a listener set up wrong.
            log.error(
                "A request on the cluster listener came without a node certificate"
            )
            raise Forbidden("The cluster listener takes node certificates only.")
        project = self.router.verify(request)
        if project is None:
            return None
        claimed = (request.requestHeaders.getRawHeaders(signing.NODE) or [b""])[0]
        holder = tls.nodeName(certificate)
        if holder is None or claimed.decode("ascii", "replace") != holder:
            log.warn(
                "Refused a request signed as node {claimed} over the "
                "certificate of {holder}",
                claimed=claimed.decode("ascii", "replace"),
                holder=holder,
            )
            raise Forbidden("The request is not signed by the node it came from.")
        return project


@dataclass(frozen=True)
class ClusterTLS:
    """
    The mutual TLS settings of a node.

    @ivar files: the cluster CA, and this node's certificate and key.
    @ivar listen: the endpoint description of the cluster listener (plain;
        mutual TLS is put on it).
    """

    files: tls.ClusterTLSFiles
    listen: str


def build(
    cluster: Any,
    ca: Optional[str],
    cert: Optional[str],
    key: Optional[str],
    listen: Optional[str],
) -> Optional[ClusterTLS]:
    """
    Check the mutual TLS settings against the cluster's and build them.

    @param cluster: the L{marconi.cluster.settings.ClusterConfig}, or
        L{None} for a node on its own.
    @return: L{None} when no mutual TLS setting is given.
    @raise ClusterConfigError: naming what is wrong.
    """
    given = {
        "--cluster-ca": ca,
        "--node-cert": cert,
        "--node-key": key,
        "--cluster-listen": listen,
    }
    https = cluster is not None and any(
        p.url.startswith("https://") for p in cluster.nodes
    )
    if not any(given.values()):
        if https:
            raise ClusterConfigError(
                "https:// cluster node URLs need mutual TLS: --cluster-ca, "
                "--node-cert, --node-key and --cluster-listen"
            )
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise ClusterConfigError(
            "mutual TLS between nodes needs "
            + ", ".join(given)
            + "; missing: "
            + ", ".join(missing)
        )
    if cluster is None:
        raise ClusterConfigError(
            "--cluster-ca, --node-cert, --node-key and --cluster-listen need "
            "the cluster's nodes (--cluster-node NAME=URL)"
        )
    plain = [p.name for p in cluster.nodes if not p.url.startswith("https://")]
    if plain:
        raise ClusterConfigError(
            "with mutual TLS every --cluster-node URL is the https:// URL of "
            "the node's cluster listener; not: " + ", ".join(plain)
        )
    if tls.splitDescription(listen)[0] == "ssl":  # type: ignore[arg-type]
        raise ClusterConfigError(
            "--cluster-listen takes a plain description such as "
            "tcp:9443:interface=10.0.0.1; its TLS comes from --node-cert and "
            "--node-key"
        )
    files = tls.ClusterTLSFiles(ca=ca, cert=cert, key=key)  # type: ignore[arg-type]
    try:
        files.check()
        private, _ = tls.loadPrivateCertificate(key, cert)  # type: ignore[arg-type]
    except tls.TLSConfigError as e:
        raise ClusterConfigError(str(e)) from None
    holder = tls.nodeName(private.original)
    if holder != cluster.nodeName:
        raise ClusterConfigError(
            f"the node certificate {cert} is issued to {holder!r}, not to this "
            f"node ({cluster.nodeName!r}); its common name must be the node name"
        )
    return ClusterTLS(files, listen)  # type: ignore[arg-type]


def clusterEndpoint(reactor: Any, settings: ClusterTLS) -> tls.TLSServerEndpoint:
    """
    The cluster listener: the plain endpoint of C{settings.listen} with
    TLS that serves the node certificate and requires a client certificate
    of the cluster CA.
    """
    files = tls.TLSFiles(
        key=settings.files.key, cert=settings.files.cert, clientCA=settings.files.ca
    )
    inner = serverFromString(reactor, settings.listen)
    return tls.TLSServerEndpoint(
        inner, tls.ReloadableServerTLS(files, name="the cluster listener"), reactor
    )
