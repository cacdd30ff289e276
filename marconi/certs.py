"""
Development certificates: a cluster CA and the certificates it issues to
nodes and HTTPS listeners, made with the cryptography library.

For development and tests only: the CA key is written unencrypted next to
its certificate.  Production clusters use certificates from their own CA
(see docs/tls.rst).

Command line::

    python -m marconi.certs ca DIR [--name NAME] [--days N]
    python -m marconi.certs node DIR NAME [--host HOST ...] [--days N]

C{ca} writes C{DIR/ca.pem} and C{DIR/ca.key}; C{node} writes
C{DIR/NAME.pem} and C{DIR/NAME.key}, issued by the CA in C{DIR}, for the
host names and IP addresses given (C{127.0.0.1} and C{localhost} when none
are).
"""

import argparse
import datetime
import ipaddress
import os
import sys
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DAYS = 365
DEFAULT_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Issued:
    """
    A certificate and its private key, as objects of the cryptography
    library.
    """

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def certPEM(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def keyPEM(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, certPath: str, keyPath: str) -> None:
        """
        Write the certificate, and the key readable by its owner only.
        """
        with open(certPath, "wb") as f:
            f.write(self.certPEM())
        fd = os.open(keyPath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.keyPEM())

    @classmethod
    def read(cls, certPath: str, keyPath: str) -> "Issued":
        with open(certPath, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(keyPath, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
        return cls(cert, key)  # type: ignore[arg-type]


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Marconi development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _validity(notBefore: Optional[datetime.datetime], days: int) -> tuple:
    start = notBefore or (
        datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    )
    return start, start + datetime.timedelta(days=days)


def makeCA(
    name: str = "Marconi development CA",
    days: int = DEFAULT_DAYS,
    notBefore: Optional[datetime.datetime] = None,
) -> Issued:
    """
    A self-signed CA certificate that may issue end-entity certificates
    only (path length 0).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(notBefore, days)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def subjectAltNames(hosts: Iterable[str]) -> list:
    """
    SAN entries for C{hosts}: an IP address entry for each address, a DNS
    entry for each other name.
    """
    names: list = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def makeNode(
    ca: Issued,
    name: str,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    days: int = DEFAULT_DAYS,
    notBefore: Optional[datetime.datetime] = None,
) -> Issued:
    """
    A certificate issued by C{ca} to node C{name} (its common name) for
    C{hosts} (its subject alternative names), good for both ends of a TLS
    connection: a node serves with it and presents it to its peers.
    """
    if not hosts:
        raise ValueError("a node certificate needs at least one host name or IP")
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(notBefore, days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(subjectAltNames(hosts)), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def main(argv: Optional[Sequence[str]] = None, out=None) -> int:
    """
    The command line (see the module's docstring).
    """
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="marconi certs",
        description="Make a development cluster CA and node certificates.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    caParser = sub.add_parser("ca", help="create DIR/ca.pem and DIR/ca.key")
    caParser.add_argument("directory")
    caParser.add_argument("--name", default="Marconi development CA")
    caParser.add_argument("--days", type=int, default=DEFAULT_DAYS)
    caParser.add_argument("--force", action="store_true", help="replace an existing CA")
    nodeParser = sub.add_parser(
        "node", help="create DIR/NAME.pem and DIR/NAME.key, issued by DIR/ca.pem"
    )
    nodeParser.add_argument("directory")
    nodeParser.add_argument("name", help="the node name (the certificate's CN)")
    nodeParser.add_argument(
        "--host",
        action="append",
        default=[],
        help="a DNS name or IP address the node is reached at; repeat for "
        "several [default: 127.0.0.1 and localhost]",
    )
    nodeParser.add_argument("--days", type=int, default=DEFAULT_DAYS)
    args = parser.parse_args(argv)
    if args.days <= 0:
        parser.error("--days must be positive")
    directory = args.directory
    os.makedirs(directory, exist_ok=True)
    caCert = os.path.join(directory, "ca.pem")
    caKey = os.path.join(directory, "ca.key")
    if args.command == "ca":
        if os.path.exists(caCert) and not args.force:
            parser.error(f"{caCert} exists; give --force to replace it")
        makeCA(args.name, args.days).write(caCert, caKey)
        print(f"wrote {caCert} and {caKey}", file=out)
        return 0
    if not os.path.exists(caCert) or not os.path.exists(caKey):
        parser.error(f"no CA in {directory}; create one with: ca {directory}")
    if "/" in args.name or args.name.startswith("."):
        parser.error(f"{args.name!r} is not a node name")
    ca = Issued.read(caCert, caKey)
    node = makeNode(ca, args.name, args.host or DEFAULT_HOSTS, args.days)
    certPath = os.path.join(directory, f"{args.name}.pem")
    keyPath = os.path.join(directory, f"{args.name}.key")
    node.write(certPath, keyPath)
    print(f"wrote {certPath} and {keyPath}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
