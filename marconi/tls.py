"""
TLS for a node: HTTPS listeners, certificate reloading, and the mutually
authenticated TLS that nodes of a cluster speak to each other.

Every context Marconi makes accepts TLS 1.2 and newer only, and only
forward-secret cipher suites (ECDHE or DHE key exchange with AES-GCM or
ChaCha20-Poly1305 for TLS 1.2; every TLS 1.3 suite is forward secret).
Session tickets are off, so no long-lived ticket key weakens forward secrecy.

Listeners are wrapped in L{TLSServerEndpoint}; its L{ReloadableServerTLS}
reads the key and certificate files again on L{ReloadableServerTLS.reload}:
the new context is built completely before it replaces the old one, so a
connection is always served with either the old or the new certificate,
and a failed reload keeps the old one.  L{TLSReloader} does this for every
listener of a node on C{SIGHUP}.

C{--listen} takes Twisted's C{ssl:} description unchanged
(C{ssl:8443:privateKey=KEY:certKey=CERT[:extraCertChain=CHAIN]
[:interface=IP][:backlog=N][:dhParameters=FILE]}).  Such listeners are
built by the C{marconi-tls:} endpoint, a Twisted endpoint string parser
plugin (C{twisted/plugins/marconi_endpoints.py}), with Marconi's versions
and ciphers, on IPv4 or IPv6 as the interface says;
L{serverFromDescription} reads C{ssl:} as C{marconi-tls:} and hands every
description to Twisted's L{serverFromString}.
"""

import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import (
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
    cast,
)

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from OpenSSL import SSL, crypto
from twisted.application.service import Service
from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    _parse,
    serverFromString,
)
from twisted.internet.interfaces import (
    IAcceptableCiphers,
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorFromThreads,
    IReactorTCP,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import (
    AcceptableCiphers,
    Certificate,
    CertificateOptions,
    DiffieHellmanParameters,
    KeyPair,
    PrivateCertificate,
    TLSVersion,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.filepath import FilePath
from twisted.web.iweb import IPolicyForHTTPS, IRequest
from zope.interface import implementer

log = Logger()

#: The oldest protocol version any Marconi context accepts.
MINIMUM_VERSION = TLSVersion.TLSv1_2

#: The TLS 1.2 cipher suites (OpenSSL syntax): forward-secret key exchange
#: and AEAD ciphers only.  DHE needs C{dhParameters}; without them OpenSSL
#: leaves it out.
CIPHER_STRING = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"

#: The endpoint type of Marconi's TLS listeners, an
#: L{IStreamServerEndpointStringParser} plugin in C{twisted.plugins};
#: C{--listen ssl:...} is read as it.  (Twisted's own C{ssl:} is built in
#: and cannot be replaced by a plugin; its C{tls:} is another endpoint.)
PREFIX = "marconi-tls"

#: The options of Twisted's C{ssl:} server description that Marconi takes.
_SSL_OPTIONS = frozenset(
    ("privateKey", "certKey", "extraCertChain", "dhParameters", "interface", "backlog")
)


#: The kinds of private key a certificate can be served with.
_SERVER_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)


#: What C{signal.signal} takes and returns.
_SignalHandler = Union[Callable[[int, Optional[FrameType]], object], int, None]


class Reloadable(Protocol):
    """
    What L{TLSReloader} reloads.

    @ivar name: what it is called in the log.
    """

    name: str

    def reload(self) -> None:
        """
        Read the files again.

        @raise TLSConfigError: if they are wrong; the old ones stay in use.
        """


class TLSConfigError(ValueError):
    """
    A TLS file or setting is wrong; the message says which and why.
    """


def acceptableCiphers() -> IAcceptableCiphers:
    return AcceptableCiphers.fromOpenSSLCipherString(CIPHER_STRING)


@dataclass(frozen=True)
class TLSFiles:
    """
    Where a context's key material is.

    @ivar key: PEM private key.
    @ivar cert: PEM certificate; it may be followed by the certificates of
        its chain (intermediate CAs), which are then sent along.
    @ivar chain: PEM file of further chain certificates, or L{None}.
    @ivar clientCA: PEM file of the CA certificates a client's certificate
        must be issued by; L{None} asks for no client certificate.
    @ivar dhParameters: PEM Diffie-Hellman parameters, or L{None}.
    """

    key: str
    cert: str
    chain: Optional[str] = None
    clientCA: Optional[str] = None
    dhParameters: Optional[str] = None


def _read(path: str, what: str) -> bytes:
    try:
        return FilePath(path).getContent()
    except OSError as e:
        raise TLSConfigError(f"cannot read the {what} {path}: {e.strerror}") from None


def _why(error: Exception) -> str:
    """
    The first sentence of a loader's complaint (C{cryptography} follows it
    with a link to its FAQ).
    """
    return str(error).split(". ", 1)[0].rstrip(".")


def loadCertificates(path: str, what: str = "certificate file") -> List[Certificate]:
    """
    Every certificate of a PEM file, in order.

    @raise TLSConfigError: if the file cannot be read or holds no valid
        certificate.
    """
    pem = _read(path, what)
    try:
        loaded = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise TLSConfigError(
            f"{path} is not a PEM certificate file: {_why(e)}"
        ) from None
    return [Certificate(crypto.X509.from_cryptography(c)) for c in loaded]


def loadPrivateCertificate(
    keyPath: str, certPath: str
) -> Tuple[PrivateCertificate, List[Certificate]]:
    """
    The certificate of C{certPath} with the key of C{keyPath}, and the
    chain certificates that followed it in C{certPath}.

    @raise TLSConfigError: if a file is unreadable or the key does not
        belong to the certificate.
    """
    certificates = loadCertificates(certPath)
    keyPEM = _read(keyPath, "private key")
    try:
        key = serialization.load_pem_private_key(keyPEM, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise TLSConfigError(f"{keyPath} is not a PEM private key: {_why(e)}") from None
    if not isinstance(key, _SERVER_KEYS):
        raise TLSConfigError(
            f"{keyPath} is not a PEM private key: a {type(key).__name__} "
            "cannot sign a TLS handshake"
        )
    pair = KeyPair(crypto.PKey.from_cryptography_key(key))
    try:
        private = PrivateCertificate.fromCertificateAndKeyPair(certificates[0], pair)
    except Exception as e:
        raise TLSConfigError(
            f"the key {keyPath} does not match the certificate {certPath}: {e}"
        ) from None
    return private, certificates[1:]


def serverOptions(files: TLSFiles) -> CertificateOptions:
    """
    Build (and check, by making its context) the server options for
    C{files}.

    @raise TLSConfigError: if a file is wrong.
    """
    private, chain = loadPrivateCertificate(files.key, files.cert)
    if files.chain is not None:
        chain += loadCertificates(files.chain, "certificate chain file")
    kwargs: dict = {}
    if files.clientCA is not None:
        kwargs["trustRoot"] = trustRootFromCertificates(
            loadCertificates(files.clientCA, "CA file")
        )
    if files.dhParameters is not None:
        _read(files.dhParameters, "Diffie-Hellman parameters file")
        kwargs["dhParameters"] = DiffieHellmanParameters.fromFile(
            FilePath(files.dhParameters)
        )
    options = CertificateOptions(
        privateKey=private.privateKey.original,
        certificate=private.original,
        extraCertChain=[c.original for c in chain] or None,
        raiseMinimumTo=MINIMUM_VERSION,
        acceptableCiphers=acceptableCiphers(),
        enableSessionTickets=False,
        **kwargs,
    )
    try:
        options.getContext()
    except SSL.Error as e:
        raise TLSConfigError(f"{files.cert}: {e}") from None
    return options


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableServerTLS:
    """
    The server side of TLS for one listener, whose key material can be read
    again while connections are being served.

    @ivar files: where the key material is.
    @ivar name: what the listener is called in the log.
    """

    def __init__(self, files: TLSFiles, name: str = "listener") -> None:
        self.files = files
        self.name = name
        self._options = serverOptions(files)

    @property
    def certificate(self) -> crypto.X509:
        """
        The certificate served now.
        """
        return cast(crypto.X509, self._options.certificate)

    def serverConnectionForTLS(self, protocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        return self._options.serverConnectionForTLS(protocol)

    def reload(self) -> None:
        """
        Read the files again and serve new connections with them; the
        connections already open keep theirs.

        @raise TLSConfigError: if the files are wrong; the certificate in
            use stays.
        """
        self._options = serverOptions(self.files)


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """
    Any server endpoint, with TLS on every connection it accepts.

    @ivar tls: the L{ReloadableServerTLS} of the connections.
    @ivar mutual: whether clients must present a certificate.
    """

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        tls: ReloadableServerTLS,
        clock: IReactorTime,
    ) -> None:
        self._endpoint = endpoint
        self.tls = tls
        self.mutual = tls.files.clientCA is not None
        self._clock = clock

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self._endpoint.listen(
            TLSMemoryBIOFactory(self.tls, False, factory, clock=self._clock)
        )


def splitDescription(description: str) -> Tuple[str, List[str], Dict[str, str]]:
    """
    Split a Twisted endpoint description into its type, positional and
    keyword arguments, exactly as L{serverFromString} splits it (C{\\}
    escapes the next character, C{:} separates arguments and the first
    C{=} of an argument separates its name from its value).
    """
    args, kwargs = _parse(description)
    return args[0], args[1:], kwargs


def parseListener(reactor: IReactorTCP, *args: str, **kwargs: str) -> TLSServerEndpoint:
    """
    The C{parseStreamServer} of the C{marconi-tls:} endpoint plugin.
    """
    return tlsListener(reactor, args, kwargs)


def tlsListener(
    reactor: IReactorTCP,
    args: Sequence[str],
    kwargs: Mapping[str, str],
    clientCA: Optional[str] = None,
) -> TLSServerEndpoint:
    """
    The TLS listener of the arguments of an C{ssl:} (or C{marconi-tls:})
    description: Twisted's C{ssl:} options, with Marconi's versions and
    ciphers, reloadable key material, and a TCP listener on IPv4 or IPv6
    as C{interface} says.

    @param reactor: a reactor that also provides L{IReactorTime}.
    @param clientCA: the CA file client certificates must come from, or
        L{None} to ask for none; never an option of the description.
    @raise TLSConfigError: if the arguments or their files are wrong.
    """
    unknown = set(kwargs) - _SSL_OPTIONS
    if "sslmethod" in unknown:
        raise TLSConfigError(
            "sslmethod is not supported; Marconi always speaks TLS 1.2 and newer"
        )
    if unknown:
        raise TLSConfigError(f"unknown option(s) {', '.join(sorted(unknown))}")
    if len(args) != 1:
        raise TLSConfigError("give one port, as in ssl:8443:...")
    try:
        port = int(args[0])
        backlog = int(kwargs.get("backlog", 50))
    except ValueError:
        raise TLSConfigError("the port and the backlog must be numbers") from None
    key = kwargs.get("privateKey", "server.pem")
    files = TLSFiles(
        key=key,
        cert=kwargs.get("certKey", key),
        chain=kwargs.get("extraCertChain"),
        clientCA=clientCA,
        dhParameters=kwargs.get("dhParameters"),
    )
    interface = kwargs.get("interface", "")
    inner: IStreamServerEndpoint
    if isIPv6Address(interface):
        inner = TCP6ServerEndpoint(reactor, port, backlog, interface)
        name = f"the TLS listener on [{interface}]:{port}"
    else:
        inner = TCP4ServerEndpoint(reactor, port, backlog, interface)
        name = f"the TLS listener on {interface or '*'}:{port}"
    tls = ReloadableServerTLS(files, name=name)
    return TLSServerEndpoint(inner, tls, cast(IReactorTime, reactor))


def serverFromDescription(
    reactor: IReactorTCP, description: str, clientCA: Optional[str] = None
) -> IStreamServerEndpoint:
    """
    The server endpoint of a C{--listen} description, from Twisted's
    L{serverFromString}.  C{ssl:} is read as Marconi's C{marconi-tls:}
    endpoint (see L{PREFIX}), which takes the same options: a reloadable
    L{TLSServerEndpoint} with Marconi's versions and ciphers, on IPv4 or
    IPv6.

    @param clientCA: the CA file client certificates must come from; only
        for C{ssl:} descriptions.
    @raise TLSConfigError: if a TLS description or its files are wrong.
    @raise ValueError: if another description is wrong.
    """
    kind, _, rest = description.partition(":")
    if kind in ("ssl", PREFIX):
        description = f"{PREFIX}:{rest}"
    elif clientCA is not None:
        raise TLSConfigError(
            f"{description!r}: a listener for node certificates must be ssl:PORT:..."
        )
    if clientCA is None:
        return serverFromString(reactor, description)
    _, args, kwargs = splitDescription(description)
    return tlsListener(reactor, args, kwargs, clientCA)


class TLSReloader(Service):
    """
    Reloads the certificates of a node (its TLS listeners, and the
    certificate it presents to its peers) when the process gets C{SIGHUP}
    (where there are signals), or when L{reload} is called.

    The signal handler only schedules the reload on the reactor thread.

    @ivar contexts: what is reloaded: objects with a C{name} and a
        C{reload()} that raises L{TLSConfigError} when the files are wrong.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        signum: Optional[int] = getattr(signal, "SIGHUP", None),
    ) -> None:
        self._reactor = reactor
        self._signum = signum
        self._previous: _SignalHandler = None
        self.contexts: List[Reloadable] = []

    def add(self, reloadable: Reloadable) -> None:
        self.contexts.append(reloadable)

    def startService(self) -> None:
        super().startService()
        if (
            self._signum is not None
            and self.contexts
            and threading.current_thread() is threading.main_thread()
        ):
            self._previous = signal.signal(self._signum, self._onSignal)

    def stopService(self) -> Optional[Deferred[object]]:
        if self._signum is not None and self._previous is not None:
            signal.signal(self._signum, self._previous)
            self._previous = None
        return super().stopService()

    def _onSignal(self, signum: int, frame: Optional[FrameType]) -> None:
        self._reactor.callFromThread(self.reload)

    def reload(self) -> int:
        """
        Reload every certificate; one that fails keeps its old files and is
        logged.

        @return: how many failed.
        """
        failed = 0
        for reloadable in self.contexts:
            try:
                reloadable.reload()
            except TLSConfigError as e:
                failed += 1
                log.error(
                    "Kept the old certificate of {listener}: {error}",
                    listener=reloadable.name,
                    error=str(e),
                )
            else:
                log.info(
                    "Reloaded the certificate of {listener}",
                    listener=reloadable.name,
                )
        return failed


@dataclass(frozen=True)
class ClusterTLSFiles:
    """
    The key material of a node in a cluster that speaks mutual TLS.

    @ivar ca: PEM file of the cluster CA certificate(s).
    @ivar cert: PEM node certificate (issued by the cluster CA).
    @ivar key: PEM private key of the node certificate.
    """

    ca: str
    cert: str
    key: str

    def check(self) -> None:
        """
        @raise TLSConfigError: if a file is wrong.
        """
        loadCertificates(self.ca, "cluster CA file")
        loadPrivateCertificate(self.key, self.cert)


@implementer(IPolicyForHTTPS)
class NodeClientPolicy:
    """
    How a node connects to its peers: the peer must present a certificate
    issued by the cluster CA for the host name or IP address of its URL
    (checked with service_identity), and this node presents its own
    certificate.  One connection creator per host is kept; L{reload} reads
    the files again.
    """

    name = "the connections to peers"

    def __init__(self, files: ClusterTLSFiles) -> None:
        self.files = files
        self._load()

    def _load(self) -> None:
        trust = trustRootFromCertificates(
            loadCertificates(self.files.ca, "cluster CA file")
        )
        private, chain = loadPrivateCertificate(self.files.key, self.files.cert)
        self._trust = trust
        self._private = private
        self._chain = [c.original for c in chain] or None
        self._creators: Dict[Tuple[bytes, int], IOpenSSLClientConnectionCreator] = {}

    def reload(self) -> None:
        """
        @raise TLSConfigError: if a file is wrong; the old ones stay in use.
        """
        self._load()

    def creatorForNetloc(
        self, hostname: bytes, port: int
    ) -> IOpenSSLClientConnectionCreator:
        key = (hostname, port)
        creator = self._creators.get(key)
        if creator is None:
            extra: dict = {
                "raiseMinimumTo": MINIMUM_VERSION,
                "acceptableCiphers": acceptableCiphers(),
            }
            if self._chain:
                extra["extraCertChain"] = self._chain
            creator = optionsForClientTLS(
                hostname.decode("ascii"),
                trustRoot=self._trust,
                clientCertificate=self._private,
                extraCertificateOptions=extra,
            )
            self._creators[key] = creator
        return creator


def peerCertificate(request: IRequest) -> Optional[crypto.X509]:
    """
    The certificate the client of C{request} presented and the handshake
    verified, or L{None}.
    """
    transport = getattr(getattr(request, "channel", None), "transport", None)
    getPeer = getattr(transport, "getPeerCertificate", None)
    if getPeer is None:
        return None
    return cast(Optional[crypto.X509], getPeer())


def nodeName(x509: Optional[crypto.X509]) -> Optional[str]:
    """
    The node name a node certificate is issued to: its subject's common
    name.
    """
    return x509.get_subject().commonName if x509 is not None else None
