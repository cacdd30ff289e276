"""
Marconi's C{marconi-tls:} server endpoint, which C{--listen ssl:...} also means:
Twisted's C{ssl:} options with Marconi's TLS versions, ciphers and
certificate reloading, on IPv4 or IPv6.  Its code is imported only when a
description uses it.
"""

from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _TLSListenerParser:
    prefix = "marconi-tls"  # marconi.tls.PREFIX, not imported here

    def parseStreamServer(self, reactor, *args, **kwargs):
        from marconi.tls import parseListener

        return parseListener(reactor, *args, **kwargs)


marconiTLS = _TLSListenerParser()
