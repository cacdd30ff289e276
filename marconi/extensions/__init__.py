"""
Extensions: what the specification keeps out of Marconi's core, run by the
nodes that enable it.

An extension is announced in L{marconi.plugins} by an
L{marconi.core.drivers.ExtensionPlugin} (its name, a one-line description,
a settings checker and a factory, imported only when the extension is
enabled) and enabled in the configuration file::

    [extensions]
    enabled = subscriptions websockets

    [extension:subscriptions]
    ...its own settings...

Everything is off by default.  An enabled extension gets an
L{ExtensionHost}: the node's bus (the public domain operations of
L{marconi.core.messaging.Messaging}, and its events,
L{marconi.core.events}, the one hook into the core), its auth driver, its
router and its reactor.  It may

    - serve API resources that the API routes to it (L{ROUTES}: Zaqar v2's
      resources that extensions serve); the API authenticates the request,
      forwards it to the queue's owner in a cluster, and hands the
      extension an L{ExtensionRequest}, which it answers with an
      L{ExtensionAnswer};
    - serve a web resource of its own mounted on the node's listeners at
      C{/<mount>} (the plugin's C{mount} attribute), for example a
      websocket endpoint;
    - run in the background as a child service of the node.

With an extension off, its API resources and its mount answer 404 "Not
enabled" with a JSON error body that names it, never a bare 404.
"""

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.plugin import getPlugins
from twisted.web.resource import Resource

from marconi import plugins
from marconi.core.errors import NotEnabled
from marconi.core.interfaces import IExtension, IExtensionPlugin

log = Logger()

#: The API resources extensions serve: (extension, path under
#: C{/<version>} in Klein's form, methods).  A path with C{<queue>} is a
#: queue's resource, served by the queue's owner.
ROUTES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("subscriptions", "/queues/<queue>/subscriptions", ("GET", "POST")),
    (
        "subscriptions",
        "/queues/<queue>/subscriptions/<subscription_id>",
        ("GET", "PATCH", "DELETE"),
    ),
    (
        "subscriptions",
        "/queues/<queue>/subscriptions/<subscription_id>/confirm",
        ("PUT",),
    ),
)


@dataclass(frozen=True)
class ExtensionHost:
    """
    What an extension may use of its node.

    @ivar bus: the node's L{marconi.core.messaging.Messaging}; its
        C{events} is the hook into the core.
    @ivar auth: the node's auth driver (L{marconi.core.interfaces.IAuthDriver}).
    @ivar router: the node's L{marconi.core.interfaces.IRouter}:
        C{router.route(project, queue)} is L{None} when this node serves
        the queue, else the owner's name.
    @ivar reactor: the reactor (also the clock).
    @ivar settings: the extension's C{[extension:NAME]} section.
    @ivar nodeName: this node's name in its cluster (C{"local"} alone).
    """

    bus: Any
    auth: Any
    router: Any
    reactor: Any
    settings: Mapping[str, str] = field(default_factory=dict)
    nodeName: str = "local"


@dataclass(frozen=True)
class ExtensionRequest:
    """
    A request for an API resource an extension serves, authenticated and
    validated as far as the API goes.

    @ivar method: C{GET}, C{POST}, ...
    @ivar project: the project it acts for.
    @ivar clientId: the client's id (C{Client-ID}).
    @ivar queue: the queue of the resource, if it is a queue's.
    @ivar ids: the other path parameters (C{subscription_id}, ...).
    @ivar args: the query's parameters, each a list of values.
    @ivar body: the JSON request body, parsed, or L{None} when empty.
    @ivar base: the path prefix of hrefs in answers (C{/v2} or
        C{/v2/projects/<p>}).
    @ivar headers: the request's headers, lower-case names, latin-1 text.
    """

    method: str
    project: str
    clientId: str
    queue: Optional[str]
    ids: Mapping[str, str]
    args: Mapping[str, list]
    body: Any
    base: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtensionAnswer:
    """
    @ivar code: the HTTP status.
    @ivar document: the JSON-able body, or L{None} for none.
    @ivar headers: more headers (C{Location}, ...).
    """

    code: int
    document: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


def available() -> dict:
    """
    The extensions announced in L{marconi.plugins}, by name.
    """
    return {p.name: p for p in getPlugins(IExtensionPlugin, plugins)}


def parseEnabled(text: str, known: Optional[Iterable[str]] = None) -> tuple:
    """
    The names in C{[extensions] enabled} (spaces or commas between them).

    @raise ValueError: naming an extension no plugin announces.
    """
    names = tuple(dict.fromkeys(n for n in text.replace(",", " ").split() if n))
    known = set(available() if known is None else known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown extension(s) in [extensions] enabled: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known)) or 'none'})"
        )
    return names


def notEnabled(name: str) -> NotEnabled:
    return NotEnabled(
        f"The {name} extension is not enabled on this node "
        f"(see [extensions] enabled in its configuration)."
    )


class Extensions(MultiService):
    """
    The extensions a node runs, as a service whose children are theirs.

    @ivar enabled: the running extensions, by name.
    """

    def __init__(self, enabled: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        self.enabled: dict = dict(enabled or {})
        for extension in self.enabled.values():
            if IService.providedBy(extension):
                extension.setServiceParent(self)

    @classmethod
    def start(
        cls,
        names: Iterable[str],
        sections: Mapping[str, Mapping[str, str]],
        host: ExtensionHost,
        known: Optional[Mapping[str, Any]] = None,
    ) -> "Extensions":
        """
        Make the extensions C{names}, each with its settings section.

        @param known: the plugins by name; by default those announced.
        """
        known = available() if known is None else known
        made = {}
        for name in names:
            plugin = known[name]
            settings = dict(sections.get(name, {}))
            plugin.checkSettings(settings)
            extension = plugin.makeExtension(
                ExtensionHost(
                    host.bus,
                    host.auth,
                    host.router,
                    host.reactor,
                    settings,
                    host.nodeName,
                )
            )
            if not IExtension.providedBy(extension):
                raise TypeError(f"extension {name!r} does not provide IExtension")
            log.info("Extension {name} enabled", name=name)
            made[name] = extension
        return cls(made)

    def serve(self, name: str, request: ExtensionRequest) -> Deferred:
        """
        Hand C{request} to extension C{name}.

        @raise NotEnabled: when it does not run here.
        """
        extension = self.enabled.get(name)
        if extension is None:
            raise notEnabled(name)
        return extension.serve(request)

    def mounts(self, known: Optional[Mapping[str, Any]] = None) -> dict:
        """
        The web resources to mount on the node's listeners, by first path
        segment (L{bytes}): each enabled extension's, and for the others
        that announce a mount, one answering 404.
        """
        known = available() if known is None else known
        found = {}
        for name, plugin in known.items():
            mount = getattr(plugin, "mount", None)
            if not mount:
                continue
            extension = self.enabled.get(name)
            resource = None if extension is None else extension.resource()
            found[mount.encode("ascii")] = resource or NotEnabledResource(name)
        return found


class NotEnabledResource(Resource):
    """
    Answers every request with 404 and a JSON error naming the extension.
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render(self, request: Any) -> bytes:
        error = notEnabled(self.name)
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"application/json; charset=UTF-8")
        return json.dumps(
            {"title": error.title, "description": error.description}
        ).encode("utf-8")
