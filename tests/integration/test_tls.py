"""
The real daemon serving HTTPS only, with certificates made by the tests:
python-zaqarclient over HTTPS, and certificates reloaded on SIGHUP.
"""

import os
import shutil
import subprocess
import sys

import treq
from cryptography import x509
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.integration.test_node import _zaqarSession
from tests.nodeprocess import TWISTD, NodeProcess, environment
from tests.tlshelpers import CertificateDirectory, handshake, httpsClient


def _commonName(der: bytes) -> str:
    cert = x509.load_der_x509_certificate(der)
    return cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value


class HTTPSNodeTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.certs = CertificateDirectory(os.path.join(self.directory, "tls"))
        self.caPath = self.certs.ca()
        self.cert, self.key = self.certs.issue("node", hosts=("127.0.0.1", "localhost"))

    async def startNode(self) -> NodeProcess:
        args = [
            "--listen",
            f"ssl:0:privateKey={self.key}:certKey={self.cert}:interface=127.0.0.1",
            "--storage",
            f"sqlite:{os.path.join(self.directory, 'marconi.sqlite3')}",
        ]
        return await NodeProcess(self, self.directory, args).start()

    async def test_zaqarClientOverHTTPS(self) -> None:
        """
        A node given only an C{ssl:} listener serves python-zaqarclient over
        HTTPS (the client trusting the test CA through
        C{REQUESTS_CA_BUNDLE}) and has no plain HTTP listener.
        """
        try:
            import zaqarclient.queues.client  # noqa: F401
        except ImportError:
            raise SkipTest("python-zaqarclient is not installed") from None
        node = await self.startNode()
        self.assertTrue(node.url.startswith("https://127.0.0.1:"), node.url)
        self.assertEqual(node.log().count("Marconi listening on"), 1)
        previous = os.environ.get("REQUESTS_CA_BUNDLE")
        os.environ["REQUESTS_CA_BUNDLE"] = self.caPath

        def restore() -> None:
            if previous is None:
                os.environ.pop("REQUESTS_CA_BUNDLE", None)
            else:
                os.environ["REQUESTS_CA_BUNDLE"] = previous

        self.addCleanup(restore)
        results = await deferToThread(_zaqarSession, node.url)
        self.assertEqual(results["ping"], True)
        self.assertEqual(results["listed"], [{"n": 1}, {"n": 2}, {"n": 3}])
        self.assertEqual(results["claimed"], [{"n": 1}, {"n": 2}])
        self.assertNotIn("jobs", results["queuesAfterDelete"])

    async def test_reloadOnSIGHUP(self) -> None:
        """
        After the certificate files are replaced and the node gets SIGHUP,
        new connections see the new certificate; the node keeps serving
        throughout, and a broken file on a later SIGHUP keeps the last good
        certificate.
        """
        node = await self.startNode()
        result = await deferToThread(handshake, node.port, self.caPath)
        self.assertEqual(_commonName(result["peer"]), "node")
        cert, key = self.certs.issue("renewed", hosts=("127.0.0.1",))
        shutil.copy(cert, self.cert)
        shutil.copy(key, self.key)
        node.signal("HUP")
        await self.waitForLog(node, "Reloaded the certificate")
        result = await deferToThread(handshake, node.port, self.caPath)
        self.assertEqual(_commonName(result["peer"]), "renewed")
        with open(self.cert, "w") as f:
            f.write("garbage")
        node.signal("HUP")
        await self.waitForLog(node, "Kept the old certificate")
        http = httpsClient(self.caPath)
        response = await http.get(node.url + "/v2/ping")
        await treq.content(response)
        self.assertEqual(response.code, 204)
        reason = await node.stop()
        self.assertTrue(node.exitedCleanly(reason), node.log())

    async def waitForLog(
        self, node: NodeProcess, text: str, seconds: float = 15
    ) -> None:
        waited = 0.0
        while text not in node.log():
            if waited > seconds:
                self.fail(f"{text!r} not logged:\n{node.log()}")
            await deferLater(reactor, 0.05, lambda: None)
            waited += 0.05

    def test_badKeyIsUsageError(self) -> None:
        """
        An C{ssl:} listener whose key cannot be read is a one-line usage
        error, not a traceback.
        """
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                TWISTD,
                "marconi",
                "--listen",
                "ssl:0:privateKey=/nonexistent/key.pem",
            ],
            capture_output=True,
            text=True,
            env=environment(),
            timeout=60,
        )
        output = result.stdout + result.stderr
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("/nonexistent/key.pem", output)
        self.assertNotIn("Traceback", output)
