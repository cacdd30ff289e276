"""
The cluster settings of C{twistd marconi}: options, the C{[cluster]}
section of the configuration file, their checks, and the node they wire.
"""

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from marconi import tap
from marconi.cluster.settings import Peer
from marconi.core.interfaces import IRouter

SECRET = "a-cluster-secret-of-enough-bytes\n"


class ClusterOptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.secret = self.mktemp()
        with open(self.secret, "w") as f:
            f.write(SECRET)

    def parse(self, *args: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(["--storage", "sqlite::memory:", *args])
        return options

    def nodes(self, *names: str) -> list:
        args = []
        for i, name in enumerate(names):
            args += ["--cluster-node", f"{name}=http://127.0.0.1:{9000 + i}"]
        return args

    def test_alone(self) -> None:
        """
        Without cluster options a node runs on its own: no cluster config.
        """
        self.assertIsNone(self.parse().loaded.cluster)

    def test_options(self) -> None:
        """
        --node-name, repeated --cluster-node NAME=URL and
        --cluster-secret-file give the cluster config, nodes sorted by name
        and the secret read (without its trailing newline).
        """
        cluster = self.parse(
            "--node-name",
            "b",
            *self.nodes("c", "a", "b"),
            "--cluster-secret-file",
            self.secret,
        ).loaded.cluster
        self.assertEqual(cluster.nodeName, "b")
        self.assertEqual(cluster.names, ("a", "b", "c"))
        self.assertEqual(cluster.peer("c"), Peer("c", "http://127.0.0.1:9000"))
        self.assertEqual(cluster.secret, SECRET.strip().encode())
        self.assertNotIn(SECRET.strip(), repr(cluster))

    def test_configFile(self) -> None:
        """
        The [cluster] section gives the same settings, with timing ones; the
        command line wins over it.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                "[cluster]\nnode_name = a\n"
                "nodes = a=http://10.0.0.1:8888\n    b=http://10.0.0.2:8888/\n"
                f"secret_file = {self.secret}\nprobe_interval = 0.5\n"
                "probe_timeout = 0.25\ndown_after = 5\nmax_nonces = 1000\n"
                "idle_connections = 64\npipeline_depth = 4\n"
            )
        cluster = self.parse("--config", path).loaded.cluster
        self.assertEqual(cluster.nodeName, "a")
        self.assertEqual(
            cluster.nodes,
            (Peer("a", "http://10.0.0.1:8888"), Peer("b", "http://10.0.0.2:8888")),
        )
        self.assertEqual(cluster.probeInterval, 0.5)
        self.assertEqual(cluster.probeTimeout, 0.25)
        self.assertEqual(cluster.downAfter, 5)
        self.assertEqual(cluster.maxNonces, 1000)
        self.assertEqual(cluster.idleConnections, 64)
        self.assertEqual(cluster.pipelineDepth, 4)
        cluster = self.parse("--config", path, "--node-name", "b").loaded.cluster
        self.assertEqual(cluster.nodeName, "b")

    def test_errors(self) -> None:
        """
        Each wrong cluster setting is a usage error saying what is wrong.
        """
        secret = ["--cluster-secret-file", self.secret]
        short = self.mktemp()
        with open(short, "w") as f:
            f.write("short")
        cases = [
            (["--node-name", "a"], "need the cluster's nodes"),
            ([*self.nodes("a", "b"), *secret], "needs its own name"),
            (["--node-name", "z", *self.nodes("a", "b"), *secret], "not one of"),
            (["--node-name", "a", *self.nodes("a", "b")], "shared secret"),
            (
                ["--node-name", "a", *self.nodes("a"), "--cluster-secret-file", short],
                "shorter than",
            ),
            (
                ["--node-name", "a", *self.nodes("a"), "--cluster-secret-file", "/no"],
                "cannot read",
            ),
            (["--node-name", "a", "--cluster-node", "a", *secret], "NAME=URL"),
            (
                ["--node-name", "a", "--cluster-node", "a=ftp://x", *secret],
                "base URL",
            ),
            (
                ["--node-name", "a", "--cluster-node", "a=http://x/api", *secret],
                "base URL",
            ),
            (
                ["--node-name", "a", "--cluster-node", "a b=http://x", *secret],
                "name",
            ),
            (
                [
                    "--node-name",
                    "a",
                    "--cluster-node",
                    "a=http://x:1",
                    "--cluster-node",
                    "a=http://y:1",
                    *secret,
                ],
                "given twice",
            ),
        ]
        for args, message in cases:
            e = self.assertRaises(UsageError, self.parse, *args)
            self.assertIn(message, str(e), args)

    def test_badTunable(self) -> None:
        """
        An unknown or non-positive timing setting in [cluster] is refused.
        """
        for line, message in (
            ("probe_interval = 0", "must be positive"),
            ("probe_interval = soon", "must be a number"),
            ("idle_connections = 0", "must be positive"),
            ("idle_connections = 2.5", "must be an integer"),
            ("pipeline_depth = 0", "must be positive"),
            ("color = red", "unknown cluster setting"),
        ):
            path = self.mktemp()
            with open(path, "w") as f:
                f.write(
                    "[cluster]\nnode_name = a\nnodes = a=http://127.0.0.1:1\n"
                    f"secret_file = {self.secret}\n{line}\n"
                )
            e = self.assertRaises(UsageError, self.parse, "--config", path)
            self.assertIn(message, str(e))

    def test_serviceTree(self) -> None:
        """
        A cluster node runs its router (with the membership probes) after
        storage and before the listeners; the router provides IRouter.
        """
        from twisted.internet import reactor

        options = self.parse(
            "--listen",
            "tcp:0",
            "--node-name",
            "a",
            *self.nodes("a", "b"),
            "--cluster-secret-file",
            self.secret,
        )
        node = tap.makeService(options, reactor)
        kinds = [type(s).__name__ for s in node]
        self.assertEqual(
            kinds,
            [
                "RiverService",
                "ClusterStores",
                "PurgeService",
                "ClusterRouter",
                "Rebalancer",
                "ClusterReloader",
                "StreamServerEndpointService",
            ],
        )
        router = list(node)[3]
        self.assertTrue(verifyObject(IRouter, router))
        self.assertEqual([type(s).__name__ for s in router], ["Membership"])
        self.addCleanup(router.client.close)


class HelpTests(SynchronousTestCase):
    def test_help(self) -> None:
        """
        --help names the three cluster options.
        """
        text = str(tap.Options())
        for option in ("--node-name", "--cluster-node", "--cluster-secret-file"):
            self.assertIn(option, text)
