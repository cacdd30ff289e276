"""
TLS listeners over real loopback sockets, with certificates made by the
tests: the versions and ciphers Marconi accepts, reloading, mutual TLS,
and the client policy nodes use towards their peers.
"""

import io
import os
import shutil
import socket
import ssl
import sys

import treq
from cryptography import x509
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.address import IPv6Address
from twisted.internet.endpoints import serverFromString
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseNeverReceived,
)
from twisted.web.resource import Resource
from twisted.web.server import Site

from marconi import certs, tls
from tests.tlshelpers import (
    CertificateDirectory,
    handshake,
    httpsClient,
    sendRaw,
    tls11Hello,
)


class _WhoAmI(Resource):
    """
    Answers with the common name of the client's certificate, or "-".
    """

    isLeaf = True

    def render_GET(self, request):
        name = tls.nodeName(tls.peerCertificate(request))
        return (name or "-").encode()


def _commonName(der: bytes) -> str:
    cert = x509.load_der_x509_certificate(der)
    return cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value


class DescriptionTests(SynchronousTestCase):
    def test_splitLikeTwisted(self) -> None:
        """
        Descriptions are split as Twisted splits them: backslashes escape
        colons and the first equals sign names an argument.
        """
        self.assertEqual(
            tls.splitDescription(r"ssl:8443:privateKey=a=b:interface=\:\:1"),
            ("ssl", ["8443"], {"privateKey": "a=b", "interface": "::1"}),
        )
        self.assertEqual(
            tls.splitDescription("tcp:0:interface=127.0.0.1"),
            ("tcp", ["0"], {"interface": "127.0.0.1"}),
        )

    def test_refusesSSLMethod(self) -> None:
        """
        C{sslmethod} cannot lower the protocol version: it is refused with
        a message saying why.
        """
        error = self.assertRaises(
            tls.TLSConfigError,
            tls.serverFromDescription,
            reactor,
            "ssl:0:privateKey=k:sslmethod=TLSv1_METHOD",
        )
        self.assertIn("TLS 1.2", str(error))

    def test_refusesUnknownOption(self) -> None:
        """
        An option Twisted's C{ssl:} does not know is refused, not ignored.
        """
        error = self.assertRaises(
            tls.TLSConfigError,
            tls.serverFromDescription,
            reactor,
            "ssl:0:privateKey=k:caCerts=x",
        )
        self.assertIn("caCerts", str(error))

    def test_missingFile(self) -> None:
        """
        A key file that cannot be read is a L{TLSConfigError} naming it.
        """
        error = self.assertRaises(
            tls.TLSConfigError,
            tls.serverFromDescription,
            reactor,
            "ssl:0:privateKey=/nonexistent/k.pem",
        )
        self.assertIn("/nonexistent/k.pem", str(error))

    def test_keyDoesNotMatch(self) -> None:
        """
        A key that does not belong to the certificate is refused before
        anything listens.
        """
        d = CertificateDirectory(self.mktemp())
        d.ca()
        cert, _ = d.issue("one")
        _, otherKey = d.issue("two")
        error = self.assertRaises(
            tls.TLSConfigError,
            tls.serverFromDescription,
            reactor,
            f"ssl:0:privateKey={otherKey}:certKey={cert}",
        )
        self.assertIn("does not match", str(error))

    def test_plainDescriptions(self) -> None:
        """
        A description other than C{ssl:} is Twisted's endpoint, without TLS.
        """
        endpoint = tls.serverFromDescription(reactor, "tcp:0:interface=127.0.0.1")
        self.assertNotIsInstance(endpoint, tls.TLSServerEndpoint)

    def test_pluginFoundByTwisted(self) -> None:
        """
        Twisted's own L{serverFromString} finds the C{marconi-tls:} parser
        plugin in C{twisted.plugins} and builds Marconi's listener with it;
        a client CA cannot be asked for through the description.
        """
        d = CertificateDirectory(self.mktemp())
        d.ca()
        cert, key = d.issue("one")
        endpoint = serverFromString(
            reactor, f"{tls.PREFIX}:0:privateKey={key}:certKey={cert}"
        )
        self.assertIsInstance(endpoint, tls.TLSServerEndpoint)
        self.assertFalse(endpoint.mutual)
        error = self.assertRaises(
            tls.TLSConfigError,
            serverFromString,
            reactor,
            f"{tls.PREFIX}:0:privateKey={key}:certKey={cert}:clientCA={cert}",
        )
        self.assertIn("clientCA", str(error))


class PEMTests(SynchronousTestCase):
    """
    PEM files are read with cryptography's loaders; a bad file is a
    one-line L{tls.TLSConfigError} naming it.
    """

    def setUp(self) -> None:
        self.certs = CertificateDirectory(self.mktemp())
        self.caPath = self.certs.ca()
        self.cert, self.key = self.certs.issue("one")

    def write(self, name: str, content: bytes) -> str:
        path = self.certs.path(name)
        with open(path, "wb") as f:
            f.write(content)
        return path

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def test_fullChain(self) -> None:
        """
        The certificates after the first one of a certificate file, with
        text between them, are its chain, in order.
        """
        full = self.write(
            "full.pem",
            b"subject=one\n"
            + self.read(self.cert)
            + b"issuer=ca\n"
            + self.read(self.caPath),
        )
        private, chain = tls.loadPrivateCertificate(self.key, full)
        self.assertEqual(private.original.get_subject().CN, "one")
        self.assertEqual([c.original.get_subject().CN for c in chain], ["Test CA ca"])

    def assertBad(self, path: str, what: str, load, *args) -> None:
        error = self.assertRaises(tls.TLSConfigError, load, *args)
        message = str(error)
        self.assertIn(path, message)
        self.assertIn(what, message)
        self.assertNotIn("\n", message)
        self.assertNotIn("http", message)

    def test_badCertificateFiles(self) -> None:
        """
        An empty file, a key given as the certificate and a certificate
        block whose content is broken are refused.
        """
        empty = self.write("empty.pem", b"")
        self.assertBad(empty, "not a PEM certificate", tls.loadCertificates, empty)
        self.assertBad(
            self.key, "not a PEM certificate", tls.loadCertificates, self.key
        )
        broken = self.write(
            "broken.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        self.assertBad(broken, "not a PEM certificate", tls.loadCertificates, broken)

    def test_badKeyFiles(self) -> None:
        """
        A certificate given as the key, or a key file of garbage, is
        refused.
        """
        self.assertBad(
            self.cert,
            "not a PEM private key",
            tls.loadPrivateCertificate,
            self.cert,
            self.cert,
        )
        garbage = self.write("garbage.key", b"not a key")
        self.assertBad(
            garbage,
            "not a PEM private key",
            tls.loadPrivateCertificate,
            garbage,
            self.cert,
        )


class CertsTests(SynchronousTestCase):
    def test_nodeCertificate(self) -> None:
        """
        A node certificate names the node, is issued by the CA, carries IP
        and DNS SANs for its hosts and may serve and authenticate clients.
        """
        ca = certs.makeCA("ca")
        node = certs.makeNode(ca, "a", ["10.0.0.1", "a.example", "::1"])
        self.assertEqual(node.cert.issuer, ca.cert.subject)
        san = node.cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["a.example"])
        self.assertEqual(
            [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
            ["10.0.0.1", "::1"],
        )
        usage = node.cert.extensions.get_extension_for_class(
            x509.ExtendedKeyUsage
        ).value
        self.assertEqual(
            set(usage),
            {
                x509.ExtendedKeyUsageOID.SERVER_AUTH,
                x509.ExtendedKeyUsageOID.CLIENT_AUTH,
            },
        )
        ca.cert.public_key().verify(
            node.cert.signature,
            node.cert.tbs_certificate_bytes,
            certs.ec.ECDSA(node.cert.signature_hash_algorithm),
        )

    def test_command(self) -> None:
        """
        C{python -m marconi.certs ca DIR} then C{node DIR NAME --host ...}
        writes a CA and a node certificate a listener can serve; the keys
        are readable by their owner only and an existing CA is kept.
        """
        directory = self.mktemp()
        out = io.StringIO()
        self.assertEqual(certs.main(["ca", directory], out), 0)
        self.assertEqual(
            certs.main(["node", directory, "n1", "--host", "127.0.0.1"], out), 0
        )
        self.assertEqual(
            os.stat(os.path.join(directory, "n1.key")).st_mode & 0o777, 0o600
        )
        self.assertEqual(
            os.stat(os.path.join(directory, "ca.key")).st_mode & 0o777, 0o600
        )
        files = tls.TLSFiles(
            key=os.path.join(directory, "n1.key"),
            cert=os.path.join(directory, "n1.pem"),
        )
        self.assertEqual(
            tls.ReloadableServerTLS(files).certificate.get_subject().CN, "n1"
        )
        with open(os.path.join(directory, "ca.pem"), "rb") as f:
            before = f.read()
        errors = io.StringIO()
        self.patch(sys, "stderr", errors)
        self.assertRaises(SystemExit, certs.main, ["ca", directory], out)
        self.assertIn("--force", errors.getvalue())
        with open(os.path.join(directory, "ca.pem"), "rb") as f:
            self.assertEqual(f.read(), before)


class ListenerTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.certs = CertificateDirectory(os.path.abspath(self.mktemp()))
        self.caPath = self.certs.ca()
        self.cert, self.key = self.certs.issue("server", hosts=("127.0.0.1",))
        root = Resource()
        root.putChild(b"v2", _WhoAmIRoot())
        self.site = Site(root)

    async def listen(self, description: str, clientCA=None):
        endpoint = tls.serverFromDescription(reactor, description, clientCA=clientCA)
        port = await endpoint.listen(self.site)
        self.addCleanup(port.stopListening)
        return endpoint, port.getHost().port

    async def listenSSL(self, clientCA=None):
        return await self.listen(
            f"ssl:0:privateKey={self.key}:certKey={self.cert}:interface=127.0.0.1",
            clientCA,
        )


class _WhoAmIRoot(Resource):
    def getChild(self, name, request):
        return _WhoAmI()


class HTTPSListenerTests(ListenerTestCase):
    async def test_sslDescription(self) -> None:
        """
        Twisted's C{ssl:PORT:privateKey=KEY:certKey=CERT} serves HTTPS with
        the certificate, over TLS 1.2 or newer, and asks for no client
        certificate.
        """
        _, port = await self.listenSSL()
        result = await deferToThread(handshake, port, self.caPath)
        self.assertIn(result["version"], ("TLSv1.2", "TLSv1.3"))
        self.assertEqual(_commonName(result["peer"]), "server")
        self.assertEqual(result["status"], b"HTTP/1.0 200 OK")

    async def test_forwardSecretOnly(self) -> None:
        """
        With TLS 1.2, a client offering only static-RSA key exchange is
        refused; one offering ECDHE gets it.
        """
        rsaKey = self.certs.path("rsa.key")
        rsaCert = self.certs.path("rsa.pem")
        _writeRSA(self.certs.cas["ca"], rsaCert, rsaKey)
        _, port = await self.listen(
            f"ssl:0:privateKey={rsaKey}:certKey={rsaCert}:interface=127.0.0.1"
        )
        with self.assertRaises((ssl.SSLError, OSError)):
            await deferToThread(
                handshake,
                port,
                self.caPath,
                maximum=ssl.TLSVersion.TLSv1_2,
                ciphers="AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA",
            )
        result = await deferToThread(
            handshake,
            port,
            self.caPath,
            maximum=ssl.TLSVersion.TLSv1_2,
            ciphers="ECDHE-RSA-AES128-GCM-SHA256:AES128-GCM-SHA256",
        )
        self.assertEqual(result["version"], "TLSv1.2")
        self.assertEqual(result["cipher"], "ECDHE-RSA-AES128-GCM-SHA256")

    async def test_tls11RefusedByServer(self) -> None:
        """
        A ClientHello offering TLS 1.1 at most is answered with a fatal
        protocol_version alert: the server refuses it, whatever the local
        OpenSSL would let a client offer.
        """
        _, port = await self.listenSSL()
        answer = await deferToThread(sendRaw, port, tls11Hello())
        # An alert record: type 21, then level 2 (fatal), 70 (protocol_version).
        self.assertEqual(answer[:1], b"\x15", answer[:20])
        self.assertEqual(answer[5:7], b"\x02\x46", answer[:20])

    async def test_tls11Client(self) -> None:
        """
        A client of Python's ssl module limited to TLS 1.1 cannot complete
        a handshake (the local OpenSSL may already refuse to offer 1.1; the
        server refuses it otherwise).
        """
        _, port = await self.listenSSL()
        with self.assertRaises((ssl.SSLError, OSError, ValueError)):
            await deferToThread(
                handshake,
                port,
                self.caPath,
                minimum=ssl.TLSVersion.TLSv1,
                maximum=ssl.TLSVersion.TLSv1_1,
            )

    async def test_wrongHostname(self) -> None:
        """
        A client checking the host name refuses a certificate whose SANs do
        not name the host it connected to.
        """
        _, port = await self.listenSSL()
        with self.assertRaises(ssl.SSLCertVerificationError):
            await deferToThread(
                handshake, port, self.caPath, hostname="elsewhere.example"
            )

    async def test_reload(self) -> None:
        """
        After the files change and the reloader runs, new connections get
        the new certificate while the listener stays; files that cannot be
        loaded leave the last good certificate in place.
        """
        endpoint, port = await self.listenSSL()
        reloader = tls.TLSReloader(reactor, signum=None)
        reloader.add(endpoint.tls)
        newCert, newKey = self.certs.issue("renewed", certName="renewed")
        shutil.copy(newCert, self.cert)
        shutil.copy(newKey, self.key)
        self.assertEqual(reloader.reload(), 0)
        result = await deferToThread(handshake, port, self.caPath)
        self.assertEqual(_commonName(result["peer"]), "renewed")
        with open(self.key, "w") as f:
            f.write("not a key")
        self.assertEqual(reloader.reload(), 1)
        self.flushLoggedErrors()
        result = await deferToThread(handshake, port, self.caPath)
        self.assertEqual(_commonName(result["peer"]), "renewed")


class IPv6ListenerTests(ListenerTestCase):
    async def test_httpsOnIPv6Loopback(self) -> None:
        """
        C{ssl:} with C{interface=::1} listens on the IPv6 loopback and
        serves HTTPS there.
        """
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", 0))
        except OSError:
            raise SkipTest("this machine has no IPv6 loopback") from None
        cert, key = self.certs.issue("six", hosts=("::1",))
        endpoint = tls.serverFromDescription(
            reactor, rf"ssl:0:privateKey={key}:certKey={cert}:interface=\:\:1"
        )
        port = await endpoint.listen(self.site)
        self.addCleanup(port.stopListening)
        address = port.getHost()
        self.assertIsInstance(address, IPv6Address)
        self.assertEqual(address.host, "::1")
        with open(self.caPath, "rb") as f:
            trust = trustRootFromCertificates([Certificate.loadPEM(f.read())])
        agent = Agent(
            reactor,
            BrowserLikePolicyForHTTPS(trustRoot=trust),
            pool=HTTPConnectionPool(reactor, persistent=False),
        )
        # Bytes, because treq's URL handling refuses an IPv6 literal host.
        response = await agent.request(
            b"GET", b"https://[::1]:%d/v2/who" % (address.port,)
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(await treq.content(response), b"-")


class MutualTLSTests(ListenerTestCase):
    """
    A listener given a client CA (the cluster listener) requires a client
    certificate issued by it.
    """

    async def test_nodeCertificate(self) -> None:
        """
        A client presenting a certificate of the cluster CA is served, and
        the handler sees which node it is.
        """
        _, port = await self.listenSSL(clientCA=self.caPath)
        client = self.certs.issue("node-b")
        result = await deferToThread(handshake, port, self.caPath, cert=client)
        self.assertEqual(result["status"], b"HTTP/1.0 200 OK")

    async def test_peerIdentity(self) -> None:
        """
        Behind a mutual TLS listener, L{tls.peerCertificate} gives the
        client's certificate and L{tls.nodeName} its node name.
        """
        _, port = await self.listenSSL(clientCA=self.caPath)
        policy = tls.NodeClientPolicy(
            tls.ClusterTLSFiles(self.caPath, *self.certs.issue("node-c"))
        )
        http = _client(policy)
        response = await http.get(f"https://127.0.0.1:{port}/v2/who")
        self.assertEqual(await treq.content(response), b"node-c")

    async def test_noClientCertificate(self) -> None:
        """
        A client without a certificate is refused.
        """
        _, port = await self.listenSSL(clientCA=self.caPath)
        with self.assertRaises((ssl.SSLError, OSError)):
            await deferToThread(handshake, port, self.caPath)

    async def test_otherCA(self) -> None:
        """
        A client certificate issued by another CA is refused.
        """
        _, port = await self.listenSSL(clientCA=self.caPath)
        self.certs.ca("other")
        stranger = self.certs.issue("stranger", ca="other")
        with self.assertRaises((ssl.SSLError, OSError)):
            await deferToThread(handshake, port, self.caPath, cert=stranger)

    async def test_expiredClientCertificate(self) -> None:
        """
        An expired client certificate of the cluster CA is refused.
        """
        _, port = await self.listenSSL(clientCA=self.caPath)
        old = self.certs.issue("old", expired=True)
        with self.assertRaises((ssl.SSLError, OSError)):
            await deferToThread(handshake, port, self.caPath, cert=old)

    async def test_publicListenerAsksNoCertificate(self) -> None:
        """
        Without a client CA, a client without certificate is served.
        """
        _, port = await self.listenSSL()
        result = await deferToThread(handshake, port, self.caPath)
        self.assertEqual(result["status"], b"HTTP/1.0 200 OK")


def _client(policy) -> HTTPClient:
    pool = HTTPConnectionPool(reactor, persistent=False)
    return HTTPClient(Agent(reactor, policy, pool=pool))


class NodeClientPolicyTests(ListenerTestCase):
    """
    The policy a node forwards with: it verifies the peer against the
    cluster CA and the host of the URL (service_identity), and presents its
    own certificate.
    """

    def policy(self) -> tls.NodeClientPolicy:
        return tls.NodeClientPolicy(
            tls.ClusterTLSFiles(self.caPath, *self.certs.issue("me"))
        )

    async def refused(self, port: int) -> str:
        """
        Request C{/v2/who} of the listener on C{port} and expect the
        request to fail in the TLS handshake; return why.
        """
        with self.assertRaises(ResponseNeverReceived) as caught:
            await _client(self.policy()).get(f"https://127.0.0.1:{port}/v2/who")
        return " ".join(repr(r.value) for r in caught.exception.reasons)

    async def test_verifiedPeer(self) -> None:
        """
        A peer with a certificate of the cluster CA for its IP address is
        reached.
        """
        _, port = await self.listenSSL(clientCA=self.caPath)
        response = await _client(self.policy()).get(f"https://127.0.0.1:{port}/v2/who")
        self.assertEqual(response.code, 200)
        self.assertEqual(await treq.content(response), b"me")

    async def test_wrongHost(self) -> None:
        """
        A peer whose certificate's SANs do not name the host of its URL is
        not trusted.
        """
        self.cert, self.key = self.certs.issue(
            "server", hosts=("10.9.9.9", "x.example")
        )
        _, port = await self.listenSSL(clientCA=self.caPath)
        why = await self.refused(port)
        self.assertIn("127.0.0.1", why)

    async def test_peerFromOtherCA(self) -> None:
        """
        A peer whose certificate comes from another CA is not trusted.
        """
        self.certs.ca("other")
        self.cert, self.key = self.certs.issue("server", ca="other")
        _, port = await self.listenSSL()
        why = await self.refused(port)
        self.assertIn("certificate verify failed", why)

    async def test_expiredPeer(self) -> None:
        """
        A peer whose certificate has expired is not trusted.
        """
        self.cert, self.key = self.certs.issue("server", expired=True)
        _, port = await self.listenSSL()
        why = await self.refused(port)
        self.assertIn("certificate verify failed", why)

    async def test_httpsClientTrustsCA(self) -> None:
        """
        The tests' own HTTPS client reaches a public listener with the CA
        (a sanity check of the helper the integration tests use).
        """
        _, port = await self.listenSSL()
        response = await httpsClient(self.caPath).get(
            f"https://127.0.0.1:{port}/v2/who"
        )
        self.assertEqual(await treq.content(response), b"-")


def _writeRSA(ca, certPath: str, keyPath: str) -> None:
    """
    An RSA server certificate, so that static-RSA suites could be chosen
    if the server allowed them.
    """
    from cryptography.hazmat.primitives.asymmetric import rsa

    node = certs.makeNode(ca, "rsa", ["127.0.0.1"])
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    builder = (
        x509.CertificateBuilder()
        .subject_name(node.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(node.cert.not_valid_before_utc)
        .not_valid_after(node.cert.not_valid_after_utc)
    )
    for extension in node.cert.extensions:
        value = extension.value
        if isinstance(value, x509.AuthorityKeyIdentifier):
            continue
        if isinstance(value, x509.KeyUsage):
            # Static RSA key exchange would encipher with the key.
            value = x509.KeyUsage(
                True, False, True, False, False, False, False, False, False
            )
        builder = builder.add_extension(value, extension.critical)
    cert = builder.sign(ca.key, certs.hashes.SHA256())
    certs.Issued(cert, key).write(certPath, keyPath)  # type: ignore[arg-type]
