"""
C{twistd marconi}: the command line of a node.
"""

from typing import Any, Optional

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python import usage

from marconi import config as configuration
from marconi.config import DEFAULT_LISTEN, DEFAULT_STORAGE

_log = Logger()


class Options(usage.Options):
    """
    Options of C{twistd marconi}.  Every setting can also come from the
    INI file given with C{--config}; the command line wins.
    """

    synopsis = "[--listen DESCRIPTION ...] [--storage URI] [--config FILE]"
    longdesc = (
        "Run a Marconi node: the Zaqar v2 compatible message bus API. "
        f"By default it listens on {DEFAULT_LISTEN} and stores into "
        f"the SQLite file {DEFAULT_STORAGE.partition(':')[2]} in the working "
        "directory."
    )
    optParameters = [
        [
            "storage",
            "s",
            None,
            "Storage URI; its scheme picks the driver: sqlite:PATH, "
            f"sqlite::memory: (throwaway) and others. [default: {DEFAULT_STORAGE}]",
        ],
        [
            "auth",
            "a",
            None,
            "Auth driver: noauth (trusts the X-Project-ID a client sends; for a "
            "node on loopback) or keystone (validates X-Auth-Token; settings in "
            "the [auth:keystone] section of --config). [default: noauth]",
        ],
        [
            "config",
            "c",
            None,
            "INI file with the same settings ([marconi] listen, storage, auth, "
            "purge_interval; [limits]; [auth:NAME]; [logging]; [monitoring]; "
            "[cluster]). Options given here win.",
        ],
        [
            "node-name",
            None,
            None,
            "This node's name in the cluster; one of the --cluster-node names.",
        ],
        [
            "cluster-secret-file",
            None,
            None,
            "File holding the secret shared by the cluster's nodes, which signs "
            "the requests they forward to each other (at least 16 bytes).",
        ],
        [
            "cluster-ca",
            None,
            None,
            "PEM file of the cluster CA: nodes talk mutual TLS, each presenting "
            "a certificate it issued (see docs/tls.rst).",
        ],
        [
            "node-cert",
            None,
            None,
            "PEM certificate of this node, issued by the cluster CA.",
        ],
        ["node-key", None, None, "PEM private key of --node-cert."],
        [
            "cluster-ring",
            None,
            None,
            "The ring's scheme: slots (the default) or md5-vnodes (the "
            "placement of clusters made before slots; see docs/cluster.rst).",
        ],
        [
            "cluster-listen",
            None,
            None,
            "Endpoint description (e.g. tcp:9443:interface=10.0.0.1) of the "
            "listener that takes node-to-node traffic only, over mutual TLS; "
            "the --cluster-node URLs are then https:// URLs of these listeners.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["cluster-node"] = []
        self["cluster-store"] = []

    def opt_listen(self, description: str) -> None:
        """
        Twisted endpoint description to serve the API on, e.g.
        tcp:8888:interface=127.0.0.1 or unix:/run/marconi.sock; repeat for
        several. [default: tcp:8888:interface=127.0.0.1]
        """
        self["listen"].append(description)

    opt_l = opt_listen

    def opt_cluster_node(self, node: str) -> None:
        """
        NAME=URL of a node of the cluster, e.g. a=http://10.0.0.1:8888, or
        'NAME=URL weight=W' for a node that takes W times the share of a
        node of weight 1 (W from 1 to 1000); repeat for every node, this
        one included.  Without it the node runs on its own.
        """
        self["cluster-node"].append(node)

    def opt_cluster_store(self, store: str) -> None:
        """
        NAME=URI of the store node NAME keeps its queues in, e.g.
        b=redis://10.0.0.2:6379/0, so that the next node on the ring can
        serve them while NAME is down; repeat for every node whose store
        is a network store (the same URI for every node when they share
        one).  See docs/cluster.rst.
        """
        self["cluster-store"].append(store)

    def postOptions(self) -> None:
        # Imported here so that --help stays cheap.
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString

        from marconi import kernel

        overrides = {
            "listen": self["listen"],
            "storage": self["storage"],
            "auth": self["auth"],
            "node_name": self["node-name"],
            "cluster_nodes": self["cluster-node"],
            "cluster_secret_file": self["cluster-secret-file"],
            "cluster_ca": self["cluster-ca"],
            "node_cert": self["node-cert"],
            "node_key": self["node-key"],
            "cluster_listen": self["cluster-listen"],
            "cluster_ring": self["cluster-ring"],
            "cluster_stores": self["cluster-store"],
        }
        path = self["config"]
        # SIGHUP reads the file again with the same command line.
        self.reread = lambda: configuration.load(path, overrides)
        try:
            loaded = self.reread()
        except configuration.ConfigError as e:
            raise usage.UsageError(str(e)) from None
        for description in loaded.listen:
            try:
                from marconi.tls import serverFromDescription

                serverFromDescription(reactor, description)
            except Exception as e:
                raise usage.UsageError(
                    f"invalid --listen description {description!r}: {e}"
                ) from None
        if loaded.clusterTLS is not None:
            try:
                serverFromString(reactor, loaded.clusterTLS.listen)
            except Exception as e:
                raise usage.UsageError(
                    f"invalid --cluster-listen description "
                    f"{loaded.clusterTLS.listen!r}: {e}"
                ) from None
        try:
            kernel.storageDriverFor(loaded.storage).checkDurability(loaded.durability)
        except ValueError as e:
            raise usage.UsageError(f"--storage {loaded.storage}: {e}") from None
        try:
            kernel.checkClusterStores(loaded)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        try:
            kernel.authDriverFor(loaded.auth)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        from marconi.observability import wiring

        try:
            wiring.check(loaded)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self.loaded = loaded


def makeService(options: Options, reactor: Optional[IReactorCore] = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        from marconi.net import leanPolling, raiseFileLimit

        # twistd's reactor: see marconi.net.leanPolling.
        leanPolling(globalReactor)
        try:
            raised = raiseFileLimit(globalReactor)
        except OSError as e:
            _log.warn(
                "Open files: the soft limit could not be raised: {error}", error=e
            )
        else:
            if raised is not None:
                _log.info(
                    "Open files: the soft limit raised from {before} to {after}",
                    before=raised[0],
                    after=raised[1],
                )
        reactor = globalReactor
    from marconi.kernel import makeNode
    from marconi.observability import wiring

    node = makeNode(options.loaded, reactor, getattr(options, "reread", None))
    # twistd's own options, when twistd runs the node.
    twistdOptions = getattr(options, "parent", None)
    clock: Any = reactor
    observer = wiring.makeLogObserver(options.loaded, twistdOptions, clock)
    if observer is None:
        return node
    return wiring.ObservedNode(
        node, observer, clock, wiring.flushInterval(options.loaded)
    )
