"""
Deferreds at interface boundaries for code written with C{async def}.
"""

import inspect
from functools import wraps
from typing import Any, Callable, Coroutine, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")


def deferred(
    function: Callable[..., Coroutine[Any, Any, T]],
) -> Callable[..., "Deferred[T]"]:
    """
    Decorate a coroutine function (or method) so that calling it returns a
    L{Deferred} of its result, as the methods of our interfaces must.

    The wrapper takes C{*args, **kwargs}, and C{zope.interface.verify}
    reads a method's parameters from its C{__code__}: it accepts such a
    wrapper for any signature.  The wrapper carries the function in
    C{__wrapped__}, so L{inspect.signature} sees the real parameters;
    L{checkSignatures} compares those with an interface.
    """

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> "Deferred[T]":
        return Deferred.fromCoroutine(function(*args, **kwargs))

    return wrapper


def checkSignatures(interface: Any, candidate: Any) -> None:
    """
    Check that each method of C{interface} on C{candidate} takes the
    parameters the interface names, in its order, looking through
    L{deferred} wrappers.

    @raise TypeError: naming the first method that differs.
    """
    for name in interface.names(all=True):
        description = interface[name]
        if not hasattr(description, "getSignatureInfo"):
            continue
        wanted = list(description.getSignatureInfo()["positional"])
        method = getattr(candidate, name)
        have = [
            p.name
            for p in inspect.signature(method).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if have != wanted:
            raise TypeError(
                f"{type(candidate).__name__}.{name} takes {have}, "
                f"{interface.__name__} names {wanted}"
            )
