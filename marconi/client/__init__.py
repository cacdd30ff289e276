"""
The Marconi client: an asynchronous library on treq (L{Client}), a blocking
facade for scripts (L{BlockingClient}), and the C{marconi} command line
(L{marconi.client.cli}).

The client speaks HTTP only; it imports nothing of the server.  Names are
imported lazily so that C{import marconi.client.cli} (the console command)
does not load Twisted before it needs it.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Client": "marconi.client.api",
    "Backoff": "marconi.client.api",
    "BlockingClient": "marconi.client.blocking",
    "OutgoingMessage": "marconi.client.models",
    "Message": "marconi.client.models",
    "Queue": "marconi.client.models",
    "Claim": "marconi.client.models",
    "QueueStats": "marconi.client.models",
    "MessageRef": "marconi.client.models",
    "Health": "marconi.client.models",
    "RingInfo": "marconi.client.models",
    "RingNode": "marconi.client.models",
    "Page": "marconi.client.models",
    "verifyMessage": "marconi.client.signing",
    "signMessage": "marconi.client.signing",
    "ClientError": "marconi.client.errors",
    "TransportError": "marconi.client.errors",
    "ConnectionFailed": "marconi.client.errors",
    "RequestTimedOut": "marconi.client.errors",
    "BadResponse": "marconi.client.errors",
    "APIError": "marconi.client.errors",
    "BadRequest": "marconi.client.errors",
    "Unauthorized": "marconi.client.errors",
    "Forbidden": "marconi.client.errors",
    "NotFound": "marconi.client.errors",
    "Conflict": "marconi.client.errors",
    "PayloadTooLarge": "marconi.client.errors",
    "ServerError": "marconi.client.errors",
    "ServiceUnavailable": "marconi.client.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'marconi.client' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list:
    return __all__
