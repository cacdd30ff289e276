"""
The cluster part of a node's configuration: who the node is, which nodes
form the cluster, the shared secret, and the timing of probes and
forwarding.

The settings come from C{--node-name}, C{--cluster-node NAME=URL} or
C{--cluster-node 'NAME=URL weight=W public=URL'} (repeatable, the words after
the URL optional, in any order), C{--cluster-store NAME=URI} (repeatable:
the store a node keeps its queues in, so that the others can serve them
while it is down), C{--cluster-ring SCHEME}
and C{--cluster-secret-file PATH}, or from the C{[cluster]}
section of the configuration file; L{build} checks them all and returns one
immutable L{ClusterConfig}.
"""

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional
from urllib.parse import urlsplit

from marconi.cluster.ring import SCHEMES
from marconi.core.text import snakeToCamel

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # used with fullmatch
_WEIGHT = re.compile(r"weight=([0-9]{1,4})")  # used with fullmatch
_WORDS = ("weight", "public")
MIN_SECRET_BYTES = 16

#: The settings of the C{[cluster]} section that tune timing and bounds, with
#: the type of their value.
TUNABLES = {
    "vnodes": int,
    "probe_interval": float,
    "probe_timeout": float,
    "down_after": int,
    "forward_timeout": float,
    "body_timeout": float,
    "max_response_body": int,
    "clock_window": float,
    "max_nonces": int,
    "idle_connections": int,
    "pipeline_depth": int,
}


class ClusterConfigError(ValueError):
    """
    A cluster setting is wrong; the message says which and why.
    """


@dataclass(frozen=True, slots=True)
class Peer:
    """
    A node of the cluster: its name (its identity on the ring), the base
    URL other nodes reach it at, its weight on the ring (a node of
    weight 2 owns twice the share of a node of weight 1), and the base URL
    clients reach it at when that is not C{url} (C{public=URL}).
    """

    name: str
    url: str
    weight: int = 1
    public: Optional[str] = None

    @property
    def clientURL(self) -> Optional[str]:
        """
        The base URL the ring publishes for clients: C{public} when given,
        else C{url} if it is a plain C{http://} URL.  An C{https://} node
        URL is the node's cluster listener (mutual TLS), which clients
        cannot use, so without C{public} there is none (L{None}).
        """
        if self.public is not None:
            return self.public
        return self.url if self.url.startswith("http://") else None


@dataclass(frozen=True)
class ClusterConfig:
    """
    @ivar nodeName: this node's name; one of C{nodes}.
    @ivar nodes: every node of the cluster, this one included, sorted by
        name, so that the same list gives the same value whatever order it
        was written in.
    @ivar secret: the shared secret that signs requests between nodes.
    @ivar ring: the ring's scheme, a key of L{marconi.cluster.ring.SCHEMES}.
    @ivar vnodes: virtual nodes per node of weight 1 on the ring of the
        C{md5-vnodes} scheme.
    @ivar probeInterval: seconds between two health probes of a peer.
    @ivar probeTimeout: seconds a probe may take (headers and body).
    @ivar downAfter: consecutive timeouts or lost connections (of probes
        and forwarded requests alike, with no answer in between) after
        which a peer is down.  A refused connection marks it down at once;
        nothing else does (see L{marconi.cluster.membership}).
    @ivar forwardTimeout: seconds to wait for a peer's response headers.
    @ivar bodyTimeout: seconds to wait for a peer's whole response body.
    @ivar maxResponseBody: the largest response body taken from a peer.
    @ivar clockWindow: how far (seconds, either way) a signed request's
        timestamp may be from this node's clock.
    @ivar stores: C{(name, uri)} pairs, sorted by name: the store each
        named node keeps its queues in, declared so that every node can
        open it (see L{marconi.cluster.stores}).  A node not named here
        has a store only it can reach.
    @ivar maxNonces: how many nonces of signed requests are remembered; a
        node refuses signed requests rather than forget a nonce inside the
        clock window, so it bounds the forwarded requests a node takes in
        twice the clock window.
    @ivar idleConnections: how many idle connections for forwarded
        requests a node keeps open to each peer: above the requests it
        forwards to one peer at once, or those over it each open and close
        a connection of their own.
    @ivar pipelineDepth: how many forwarded requests a node sends on one
        connection to a peer before their answers (see
        L{marconi.api.pipeline}); 1 sends one at a time, and does not
        offer pipelining.
    """

    nodeName: str
    nodes: tuple
    secret: bytes = field(repr=False)
    ring: str = "slots"
    vnodes: int = 160
    probeInterval: float = 2.0
    probeTimeout: float = 1.0
    downAfter: int = 3
    forwardTimeout: float = 10.0
    bodyTimeout: float = 30.0
    maxResponseBody: int = 16 * 1024 * 1024
    clockWindow: float = 60.0
    maxNonces: int = 1_000_000
    idleConnections: int = 256
    pipelineDepth: int = 128
    stores: tuple = ()

    def peer(self, name: str) -> Peer:
        for p in self.nodes:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def names(self) -> tuple:
        return tuple(p.name for p in self.nodes)

    @property
    def weights(self) -> dict:
        """
        Each node's weight on the ring, by name; nodes of weight 0
        (draining: members that own no queue) are left out.
        """
        return {p.name: p.weight for p in self.nodes if p.weight}

    @property
    def draining(self) -> bool:
        """
        Whether this node has weight 0: it owns no queue and hands every
        queue it holds to its owner (see L{marconi.cluster.rebalance}).
        """
        return self.peer(self.nodeName).weight == 0


def parseNode(text: str) -> Peer:
    """
    Parse C{NAME=URL}, optionally followed (after spaces, in any order) by
    C{weight=W}, an integer from 0 to 1000 (1 when not given; 0 is a
    draining node, a member that owns no queue), and
    C{public=URL}, the base URL clients reach the node at.

    @raise ClusterConfigError: if the name, a URL, the weight or a word is
        not acceptable.
    """
    name, sep, rest = text.strip().partition("=")
    name, words = name.strip(), rest.split()
    if not sep or not name or not 1 <= len(words) <= 1 + len(_WORDS):
        raise ClusterConfigError(
            f"cluster node {text!r} is not NAME=URL or 'NAME=URL weight=W public=URL'"
        )
    if not _NAME.fullmatch(name):
        raise ClusterConfigError(
            f"cluster node name {name!r}: use 1 to 64 letters, digits, '_', '.' or '-'"
        )
    options: dict = {}
    for word in words[1:]:
        option, _, value = word.partition("=")
        if option not in _WORDS or option in options:
            raise ClusterConfigError(
                f"cluster node {name}: {word!r} is not weight=W or public=URL "
                "(each at most once)"
            )
        options[option] = value
    weight = 1
    if "weight" in options:
        found = _WEIGHT.fullmatch("weight=" + options["weight"])
        if not found or not 0 <= int(found.group(1)) <= 1000:
            raise ClusterConfigError(
                f"cluster node {name}: 'weight={options['weight']}' is not "
                "weight=W with W an integer from 0 (draining) to 1000"
            )
        weight = int(found.group(1))
    public = None
    if "public" in options:
        public = _baseURL(name, options["public"], "public=")
    return Peer(name, _baseURL(name, words[0]), weight, public)


def _baseURL(name: str, url: str, word: str = "") -> str:
    """
    Check a node's base URL (C{http://} or C{https://}, a host, an
    optional port, no path) and return it without a trailing C{/}.
    """
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
    ):
        raise ClusterConfigError(
            f"cluster node {name}: {word}{url!r} is not a base URL like "
            "http://10.0.0.1:8888"
        )
    try:
        if parts.port == 0:
            raise ValueError
    except ValueError:
        raise ClusterConfigError(
            f"cluster node {name}: bad port in {word}{url!r}"
        ) from None
    return url.rstrip("/")


def parseStore(text: str) -> tuple:
    """
    Parse C{NAME=URI}: the store node C{NAME} keeps its queues in.  The
    URI itself is checked by its storage driver (L{marconi.kernel}).

    @raise ClusterConfigError: if it is not C{NAME=URI} with a node name.
    """
    name, sep, uri = text.strip().partition("=")
    name, uri = name.strip(), uri.strip()
    if not sep or not name or not uri or len(uri.split()) != 1:
        raise ClusterConfigError(f"cluster store {text!r} is not NAME=URI")
    if not _NAME.fullmatch(name):
        raise ClusterConfigError(
            f"cluster store {text!r}: {name!r} is not a cluster node name"
        )
    return name, uri


def _ringScheme(raw: str) -> str:
    """
    Check the C{ring} setting: the name of a scheme of L{SCHEMES}.
    """
    scheme = raw.strip()
    if scheme not in SCHEMES:
        raise ClusterConfigError(
            f"cluster setting ring must be one of {', '.join(sorted(SCHEMES))}, "
            f"not {scheme!r}"
        )
    return scheme


def _readSecret(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as e:
        raise ClusterConfigError(
            f"cannot read the cluster secret file {path}: {e.strerror}"
        ) from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ClusterConfigError(
            f"the cluster secret in {path} is shorter than {MIN_SECRET_BYTES} bytes"
        )
    return secret


def build(
    nodeName: Optional[str],
    nodes: Iterable[str],
    secretFile: Optional[str],
    tunables: Mapping[str, str] = {},
    stores: Iterable[str] = (),
) -> Optional[ClusterConfig]:
    """
    Check the cluster settings and build their L{ClusterConfig}, or return
    L{None} when no cluster node is given (a node on its own).

    @param nodes: C{NAME=URL} texts, each optionally followed by
        C{weight=W} and C{public=URL}.
    @param tunables: raw values of L{TUNABLES} settings, and of C{ring}
        (the ring's scheme), by their name.
    @param stores: C{NAME=URI} texts, one per node whose store the others
        may open.
    @raise ClusterConfigError: naming the setting that is wrong.
    """
    peers = [parseNode(text) for text in nodes]
    declared = [parseStore(text) for text in stores]
    if not peers:
        if declared:
            raise ClusterConfigError(
                "--cluster-store needs the cluster's nodes (--cluster-node NAME=URL)"
            )
        if nodeName or secretFile:
            raise ClusterConfigError(
                "--node-name and --cluster-secret-file need the cluster's "
                "nodes (--cluster-node NAME=URL, one per node)"
            )
        if tunables:
            raise ClusterConfigError(
                "cluster settings given without cluster nodes: "
                + ", ".join(sorted(tunables))
            )
        return None
    seen: dict = {}
    for peer in peers:
        if peer.name in seen and seen[peer.name] != peer:
            raise ClusterConfigError(f"cluster node {peer.name} is given twice")
        seen[peer.name] = peer
    if not nodeName:
        raise ClusterConfigError(
            "a cluster node needs its own name (--node-name), one of "
            + ", ".join(sorted(seen))
        )
    if nodeName not in seen:
        raise ClusterConfigError(
            f"--node-name {nodeName} is not one of the cluster nodes "
            f"({', '.join(sorted(seen))})"
        )
    if not secretFile:
        raise ClusterConfigError(
            "a cluster needs a shared secret (--cluster-secret-file PATH)"
        )
    storeOf: dict = {}
    for name, uri in declared:
        if name not in seen:
            raise ClusterConfigError(
                f"cluster store {name}={uri}: {name} is not one of the cluster "
                f"nodes ({', '.join(sorted(seen))})"
            )
        if storeOf.get(name, uri) != uri:
            raise ClusterConfigError(f"cluster store of {name} is given twice")
        storeOf[name] = uri
    if not any(peer.weight for peer in peers):
        raise ClusterConfigError("every cluster node has weight 0: none owns a queue")
    values: dict = {}
    for key, raw in tunables.items():
        if key == "ring":
            values["ring"] = _ringScheme(raw)
            continue
        kind = TUNABLES.get(key)
        if kind is None:
            raise ClusterConfigError(f"unknown cluster setting {key!r}")
        try:
            value = kind(raw)
        except ValueError:
            raise ClusterConfigError(
                f"cluster setting {key} must be a{'n integer' if kind is int else ' number'}"
            ) from None
        if value <= 0:
            raise ClusterConfigError(f"cluster setting {key} must be positive")
        values[snakeToCamel(key)] = value
    return ClusterConfig(
        nodeName=nodeName,
        nodes=tuple(seen[n] for n in sorted(seen)),
        secret=_readSecret(secretFile),
        stores=tuple(sorted(storeOf.items())),
        **values,
    )
