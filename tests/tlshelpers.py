"""
Certificates made by the tests, and TLS clients to talk to the nodes that
use them.  Nothing here is ever committed: every test makes its own.
"""

import datetime
import os
import socket
import ssl
from typing import Optional, Sequence

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from marconi import certs


class CertificateDirectory:
    """
    A directory of PEM files: CAs and the certificates they issue.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.cas: dict = {}

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def ca(self, name: str = "ca", **kwargs) -> str:
        """
        Make a CA; return the path of its certificate (C{NAME.pem}).
        """
        issued = certs.makeCA(f"Test CA {name}", **kwargs)
        issued.write(self.path(f"{name}.pem"), self.path(f"{name}.key"))
        self.cas[name] = issued
        return self.path(f"{name}.pem")

    def issue(
        self,
        name: str,
        ca: str = "ca",
        hosts: Sequence[str] = ("127.0.0.1",),
        expired: bool = False,
        certName: Optional[str] = None,
    ) -> tuple:
        """
        Make a node certificate for C{name} issued by CA C{ca}; return the
        paths of its certificate and key.  An C{expired} one ended
        yesterday.
        """
        kwargs: dict = {}
        if expired:
            kwargs["notBefore"] = datetime.datetime.now(
                datetime.timezone.utc
            ) - datetime.timedelta(days=30)
            kwargs["days"] = 29
        issued = certs.makeNode(self.cas[ca], name, hosts, **kwargs)
        base = certName or name
        cert, key = self.path(f"{base}.pem"), self.path(f"{base}.key")
        issued.write(cert, key)
        return cert, key


def httpsClient(caPath: str, persistent: bool = False) -> HTTPClient:
    """
    A treq client that trusts the CA of C{caPath} (only).
    """
    with open(caPath, "rb") as f:
        trust = trustRootFromCertificates([Certificate.loadPEM(f.read())])
    pool = HTTPConnectionPool(reactor, persistent=persistent)
    return HTTPClient(
        Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust), pool=pool)
    )


def handshake(
    port: int,
    caPath: Optional[str] = None,
    cert: Optional[tuple] = None,
    hostname: Optional[str] = None,
    minimum: Optional[ssl.TLSVersion] = None,
    maximum: Optional[ssl.TLSVersion] = None,
    ciphers: Optional[str] = None,
) -> dict:
    """
    Connect to C{127.0.0.1:port} with Python's ssl module, say hello over
    HTTP/1.0 and read the answer; to run in a thread.

    @return: the TLS version, cipher, the server's certificate (DER) and
        the answer's first line.
    @raise ssl.SSLError or OSError: if the handshake (or the request
        after it, where TLS 1.3 reports a refused client certificate)
        fails.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if caPath is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(caPath)
    if cert is not None:
        context.load_cert_chain(*cert)
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=hostname or "127.0.0.1") as s:
            s.sendall(b"GET /v2/ping HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            if not data:
                raise ssl.SSLError("the server closed the connection")
            return {
                "version": s.version(),
                "cipher": s.cipher()[0],
                "peer": s.getpeercert(binary_form=True),
                "status": data.split(b"\r\n", 1)[0],
            }


def tls11Hello() -> bytes:
    """
    A TLS ClientHello that offers TLS 1.1 at most (version 0x0302, no
    supported_versions extension) with ECDHE suites, built by hand so that
    the test does not depend on the local OpenSSL still speaking TLS 1.1.
    """
    suites = bytes.fromhex("c013c014c009c00a")  # ECDHE-RSA/ECDSA-AES-CBC-SHA
    curves = b"\x00\x0a\x00\x04\x00\x02\x00\x17"  # supported_groups: P-256
    points = b"\x00\x0b\x00\x02\x01\x00"  # ec_point_formats: uncompressed
    extensions = curves + points
    body = (
        b"\x03\x02"
        + os.urandom(32)
        + b"\x00"
        + len(suites).to_bytes(2, "big")
        + suites
        + b"\x01\x00"
        + len(extensions).to_bytes(2, "big")
        + extensions
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


def sendRaw(port: int, data: bytes) -> bytes:
    """
    Send C{data} to C{127.0.0.1:port} and read until the server closes
    the connection (or 10 seconds pass); to run in a thread.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        answer = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        return answer
