"""
A cluster of three real nodes that forward to each other over mutual TLS,
with a cluster CA and node certificates made by the test; and the
connections and requests such a cluster refuses.
"""

import os
import ssl

import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent, HTTPConnectionPool

from marconi import config as configuration
from marconi import tls
from marconi.cluster import signing
from tests.integration.test_cluster import (
    CLIENT,
    NAMES,
    PROJECT,
    ClusterTestCase,
    freePort,
    queueOwnedBy,
)
from tests.tlshelpers import CertificateDirectory, handshake


class MutualTLSClusterTestCase(ClusterTestCase):
    """
    The three nodes of L{ClusterTestCase}, each with a public plain
    listener and a cluster listener over mutual TLS; the node URLs name the
    cluster listeners with https://.
    """

    #: The hosts in each node's certificate.
    hosts = {name: ("127.0.0.1",) for name in NAMES}

    def setUp(self) -> None:
        super().setUp()
        self.certs = CertificateDirectory(os.path.join(self.root, "tls"))
        self.caPath = self.certs.ca()
        self.nodeCerts = {
            name: self.certs.issue(name, hosts=self.hosts[name]) for name in NAMES
        }
        self.clusterPorts = {name: freePort() for name in NAMES}
        nodes = []
        for name in NAMES:
            nodes += [
                "--cluster-node",
                f"{name}=https://127.0.0.1:{self.clusterPorts[name]}",
            ]
        for name in NAMES:
            directory, args = self.args[name]
            # Drop the plain http:// node URLs of the base class.
            args = [a for a in args if a != "--cluster-node" and "=http://" not in a]
            cert, key = self.nodeCerts[name]
            args += nodes + [
                "--cluster-listen",
                f"tcp:{self.clusterPorts[name]}:interface=127.0.0.1",
                "--cluster-ca",
                self.caPath,
                "--node-cert",
                cert,
                "--node-key",
                key,
            ]
            self.args[name] = (directory, args)
        with open(os.path.join(self.root, "secret"), "rb") as f:
            self.secret = f.read().strip()

    def nodeClient(self, name: str) -> HTTPClient:
        """
        A client presenting node C{name}'s certificate, as a peer would.
        """
        cert, key = self.nodeCerts[name]
        policy = tls.NodeClientPolicy(tls.ClusterTLSFiles(self.caPath, cert, key))
        pool = HTTPConnectionPool(reactor, persistent=False)
        return HTTPClient(Agent(reactor, policy, pool=pool))

    def signed(self, node: str, path: str, project: str, to: str) -> dict:
        """
        Valid forwarding headers for a GET of C{path}, signed as C{node}
        for node C{to}.
        """
        signer = signing.Signer(node, self.secret, reactor)
        headers = signer.headers(b"GET", path.encode(), b"", project, to)
        headers = {k.decode(): v.decode() for k, v in headers.items()}
        headers["Client-ID"] = CLIENT
        return headers


class MutualTLSClusterTests(MutualTLSClusterTestCase):
    async def test_forwardingOverMutualTLS(self) -> None:
        """
        Every node sees the others up over mutual TLS, and a queue on each
        node is written through one node and read and claimed through the
        others.
        """
        await self.startCluster()
        for name in NAMES:
            self.assertIn(
                f"Marconi cluster listener on tcp:127.0.0.1:{self.clusterPorts[name]}"
                " with mutual TLS",
                self.nodes[name].log(),
            )
        for owner in NAMES:
            queue = queueOwnedBy(owner)
            base = f"/v2/queues/{queue}"
            r, body = await self.call(
                "a", "POST", f"{base}/messages", {"messages": [{"body": owner}]}
            )
            self.assertEqual(r.code, 201, body)
            r, body = await self.call("b", "GET", f"{base}/messages?echo=true")
            self.assertEqual([m["body"] for m in body["messages"]], [owner])
            r, body = await self.call("c", "POST", f"{base}/claims", {"ttl": 60})
            self.assertEqual(r.code, 201, body)

    async def test_publicListenerRefusesForwarded(self) -> None:
        """
        A request with forwarding headers validly signed with the cluster
        secret is still refused on a public listener: forwarded traffic is
        taken only over a verified node certificate.
        """
        await self.startCluster()
        queue = queueOwnedBy("a")
        await self.call(
            "a", "POST", f"/v2/queues/{queue}/messages", {"messages": [{"body": 1}]}
        )
        path = f"/v2/queues/{queue}/messages?echo=true"
        r, body = await self.call(
            "a", "GET", path, project=None, headers=self.signed("b", path, PROJECT, "a")
        )
        self.assertEqual(r.code, 403, body)
        self.assertNotIn("messages", body)

    async def test_clusterListenerChecksSigner(self) -> None:
        """
        On the cluster listener, a request signed as node B but arriving
        over node A's certificate is refused; signed as A, it is served.
        """
        await self.startCluster()
        queue = queueOwnedBy("c")
        await self.call(
            "c", "POST", f"/v2/queues/{queue}/messages", {"messages": [{"body": 1}]}
        )
        path = f"/v2/queues/{queue}/messages?echo=true"
        url = f"https://127.0.0.1:{self.clusterPorts['c']}{path}"
        http = self.nodeClient("a")
        response = await http.get(url, headers=self.signed("b", path, PROJECT, "c"))
        await treq.content(response)
        self.assertEqual(response.code, 403)
        response = await http.get(url, headers=self.signed("a", path, PROJECT, "c"))
        body = await treq.json_content(response)
        self.assertEqual(response.code, 200)
        self.assertEqual([m["body"] for m in body["messages"]], [1])

    async def test_clusterListenerRefusesHandshakes(self) -> None:
        """
        The cluster listener refuses, in the TLS handshake, a client
        without a certificate, with a certificate of another CA, with an
        expired certificate of the cluster CA, and a TLS 1.1 client.
        """
        await self.startNode("a")
        port = self.clusterPorts["a"]
        self.certs.ca("other")
        stranger = self.certs.issue("b", ca="other", certName="stranger")
        expired = self.certs.issue("b", expired=True, certName="expired")
        for cert in (None, stranger, expired):
            with self.assertRaises((OSError,)):
                await deferToThread(handshake, port, self.caPath, cert=cert)
        with self.assertRaises((OSError, ValueError)):
            await deferToThread(
                handshake,
                port,
                self.caPath,
                cert=self.nodeCerts["b"],
                minimum=ssl.TLSVersion.TLSv1,
                maximum=ssl.TLSVersion.TLSv1_1,
            )
        result = await deferToThread(
            handshake, port, self.caPath, cert=self.nodeCerts["b"]
        )
        self.assertEqual(result["status"], b"HTTP/1.0 204 No Content")


class WrongSANTests(MutualTLSClusterTestCase):
    """
    Node C's certificate does not name the address its URL gives.
    """

    hosts = {"a": ("127.0.0.1",), "b": ("127.0.0.1",), "c": ("10.9.9.9", "c.example")}

    async def test_peerWithWrongSAN(self) -> None:
        """
        A and B do not trust C (its certificate's SANs do not include
        127.0.0.1): requests for C's queues through them fail with 503,
        while queues on A and B are served.
        """
        for name in NAMES:
            await self.startNode(name)
        # B started after A: wait until A has probed it up, as well as C down.
        await self.waitFor(
            "a",
            lambda nodes: nodes["c"]["state"] == "down" and nodes["b"]["state"] == "up",
        )
        r, body = await self.call(
            "a",
            "POST",
            f"/v2/queues/{queueOwnedBy('c')}/messages",
            {"messages": [{"body": 1}]},
        )
        self.assertEqual(r.code, 503, body)
        r, body = await self.call(
            "a",
            "POST",
            f"/v2/queues/{queueOwnedBy('b')}/messages",
            {"messages": [{"body": 1}]},
        )
        self.assertEqual(r.code, 201, body)


class SettingsTests(SynchronousTestCase):
    """
    The mutual TLS settings are checked before the node starts.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.certs = CertificateDirectory(os.path.join(self.root, "tls"))
        self.ca = self.certs.ca()
        self.cert, self.key = self.certs.issue("a")
        self.secret = os.path.join(self.root, "secret")
        with open(self.secret, "w") as f:
            f.write("s" * 32)

    def load(self, urls=("https://127.0.0.1:9443", "https://127.0.0.2:9443"), **tls):
        overrides = {
            "node_name": "a",
            "cluster_nodes": [f"{n}={u}" for n, u in zip("ab", urls, strict=True)],
            "cluster_secret_file": self.secret,
        }
        overrides.update(tls)
        return configuration.load(None, overrides)

    def full(self) -> dict:
        return {
            "cluster_ca": self.ca,
            "node_cert": self.cert,
            "node_key": self.key,
            "cluster_listen": "tcp:9443",
        }

    def test_complete(self) -> None:
        """
        All four settings with https:// node URLs give the node its
        mutual TLS settings.
        """
        loaded = self.load(**self.full())
        self.assertEqual(loaded.clusterTLS.listen, "tcp:9443")
        self.assertEqual(loaded.clusterTLS.files.ca, self.ca)

    def test_httpsNeedsTLS(self) -> None:
        """
        https:// node URLs without the mutual TLS settings are refused.
        """
        error = self.assertRaises(configuration.ConfigError, self.load)
        self.assertIn("--cluster-ca", str(error))

    def test_partial(self) -> None:
        """
        Some of the settings without the others are refused, naming the
        missing ones.
        """
        settings = self.full()
        del settings["node_key"]
        error = self.assertRaises(configuration.ConfigError, self.load, **settings)
        self.assertIn("missing: --node-key", str(error))

    def test_plainURL(self) -> None:
        """
        With mutual TLS, an http:// node URL is refused.
        """
        error = self.assertRaises(
            configuration.ConfigError,
            self.load,
            ("https://127.0.0.1:9443", "http://127.0.0.2:8888"),
            **self.full(),
        )
        self.assertIn("https://", str(error))

    def test_certificateOfAnotherNode(self) -> None:
        """
        A node certificate whose common name is not the node's name is
        refused.
        """
        settings = self.full()
        settings["node_cert"], settings["node_key"] = self.certs.issue("b")
        error = self.assertRaises(configuration.ConfigError, self.load, **settings)
        self.assertIn("issued to 'b'", str(error))

    def test_sslClusterListen(self) -> None:
        """
        The cluster listener takes a plain description; its TLS comes from
        the node certificate.
        """
        settings = self.full()
        settings["cluster_listen"] = "ssl:9443:privateKey=x"
        error = self.assertRaises(configuration.ConfigError, self.load, **settings)
        self.assertIn("plain description", str(error))

    def test_iniFile(self) -> None:
        """
        The [cluster] section takes ca, node_cert, node_key and listen.
        """
        path = os.path.join(self.root, "marconi.ini")
        with open(path, "w") as f:
            f.write(
                "[cluster]\nnode_name = a\nnodes = a=https://127.0.0.1:9443\n"
                f"secret_file = {self.secret}\nca = {self.ca}\n"
                f"node_cert = {self.cert}\nnode_key = {self.key}\n"
                "listen = tcp:9443:interface=127.0.0.1\n"
            )
        loaded = configuration.load(path, {})
        self.assertEqual(loaded.clusterTLS.listen, "tcp:9443:interface=127.0.0.1")
