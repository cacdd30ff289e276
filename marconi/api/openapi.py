"""
The OpenAPI 3 document of the whole HTTP API, served at
C{GET /v2/openapi.json}.

Paths are written once with a C{{version}} parameter (C{v2} or C{v1.1}),
and every queue resource appears twice: under C{/{version}} (the project in
the C{X-Project-ID} header) and under C{/{version}/projects/{project_id}}.
A test walks the Klein routes and compares them with this document both
ways, so a route cannot be added without being described here.  An
operation that not every version serves names its versions in its own
C{version} parameter; where v1.1 reads a value otherwise, the schema's
description says so.
"""

import copy
import re
from typing import Callable, Iterable, Optional

from marconi import extensions
from marconi.api import presigned
from marconi.api.versions import POLICIES, V1_1
from marconi.core import audit, signing
from marconi.core.durability import LEVELS
from marconi.core.limits import Limits
from marconi.core.text import FALSE_WORDS, TRUE_WORDS
from marconi.core.waiting import MAXIMUM_WAIT

OPENAPI_PATH = "/v2/openapi.json"

_JSON = "application/json"
_PATCH = "application/openstack-messaging-v2.0-json-patch"

#: Every answer but the versions and OpenAPI documents is also served as
#: XML: the same document in the typed form of docs/media.rst.
_XML = "application/xml"
_XML_FORM = {"schema": {"description": "The JSON document in the typed XML form."}}

_ERROR_RESPONSE = {
    "description": "An error, with a title and a description.",
    "content": {
        _JSON: {"schema": {"$ref": "#/components/schemas/Error"}},
        _XML: _XML_FORM,
    },
}


def _param(name: str, where: str, schema: dict, required: bool = False, **kw) -> dict:
    return dict(name=name, required=required, schema=schema, **{"in": where}, **kw)


def _anyCase(words: Iterable[str]) -> str:
    """
    A pattern matching any of C{words} in any case, with spaces around.
    """
    alternatives = "|".join(
        "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)
        for word in sorted(words)
    )
    return rf"^ *({alternatives}) *$"


def _json(schemaRef: str, description: str, xml: bool = True) -> dict:
    content: dict = {_JSON: {"schema": {"$ref": "#/components/schemas/" + schemaRef}}}
    if xml:
        content[_XML] = _XML_FORM
    return {"description": description, "content": content}


def _empty(description: str) -> dict:
    return {"description": description}


_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}


def _ref(name: str) -> dict:
    return {"$ref": "#/components/schemas/" + name}


def _object(required: list, **properties: dict) -> dict:
    return {"type": "object", "required": required, "properties": properties}


def _array(items: dict, **bounds: int) -> dict:
    return {"type": "array", **bounds, "items": items}


def _bounded(low: int, high: int) -> dict:
    return {"type": "integer", "minimum": low, "maximum": high}


def _components(limits: Limits) -> dict:
    integer = _INTEGER
    message = _object(
        ["id", "href", "ttl", "age", "body", "checksum"],
        id=_STRING,
        href=_STRING,
        ttl=integer,
        age=integer,
        body={},
        checksum=_STRING,
        tags=_array(_STRING),
        signature=_ref("DeliverySignature"),
    )
    popped = copy.deepcopy(message)
    popped["required"] = ["id", "ttl", "age", "body", "checksum"]
    popped["properties"]["claim_id"] = {"nullable": True}
    popped["properties"]["claim_count"] = integer
    tag = {
        "type": "string",
        "minLength": 1,
        "maxLength": limits.maxTagLength,
        "pattern": r"^[^\x00-\x20\x7f,/]+$",
    }
    newMessage = _object(
        ["body"],
        body={},
        ttl=_bounded(limits.minMessageTTL, limits.maxMessageTTL),
        delay=_bounded(0, limits.maxMessageDelay),
        tags=_array(tag, maxItems=limits.maxTagsPerMessage),
        signature=dict(
            _object(["key_id", "value"], key_id=_STRING, value=_STRING),
            nullable=True,
            description=(
                "The producer's signature (docs/signing.rst): required by a "
                "queue with _require_signed_posts, checked whenever the queue "
                "has signing keys."
            ),
        ),
    )
    statsMessage = _object(
        ["id", "href", "age", "created"],
        id=_STRING,
        href=_STRING,
        age=integer,
        created=_STRING,
    )
    links = _array(_ref("Link"))
    patchOperation = _object(
        ["op", "path"],
        op={"type": "string", "enum": ["add", "remove", "replace"]},
        path={"type": "string", "pattern": "^/metadata/.+"},
        value={},
    )
    return {
        "schemas": {
            "Error": _object(
                ["title", "description"], title=_STRING, description=_STRING
            ),
            "Message": message,
            "DeliverySignature": dict(
                _object(
                    ["key_id", "alg", "enqueued", "value"],
                    key_id=_STRING,
                    alg={"type": "string", "enum": ["HMAC-SHA256"]},
                    enqueued=integer,
                    value=_STRING,
                ),
                description=(
                    "The node's signature of a message delivered from a queue "
                    "with signing keys (v2 only; docs/signing.rst)."
                ),
            ),
            "PoppedMessage": popped,
            "Link": _object(["rel", "href"], rel=_STRING, href=_STRING),
            "NewMessages": _object(
                ["messages"],
                messages=_array(
                    newMessage, minItems=1, maxItems=limits.maxMessagesPerPost
                ),
            ),
            "Resources": _object(["resources"], resources=_array(_STRING)),
            "Purge": _object(
                ["resource_types"],
                resource_types=_array(
                    {"type": "string", "enum": ["messages", "subscriptions"]}
                ),
            ),
            "MessageList": _object(
                ["messages"], messages=_array(_ref("Message")), links=links
            ),
            "PoppedList": _object(["messages"], messages=_array(_ref("PoppedMessage"))),
            "AuditList": _object(
                ["events", "links"],
                events=_array(
                    _object(
                        ["id", "marker", "action", "at"],
                        id=_STRING,
                        marker=_STRING,
                        action=_STRING,
                        at={"type": "number"},
                        queue=_STRING,
                    )
                ),
                links=links,
                partial={"type": "boolean"},
                missing_nodes=_array(_STRING),
            ),
            "QueueMetadata": {
                "type": "object",
                "properties": {
                    "_signing_key_ids": dict(
                        _array(_STRING),
                        description="The ids of the queue's signing keys.",
                    ),
                    "_require_signed_posts": {"type": "boolean"},
                },
            },
            "NewQueueMetadata": {
                "type": "object",
                "nullable": True,
                "properties": {
                    "_signing_keys": dict(
                        _array(
                            _object(["id"], id=_STRING, secret=_STRING),
                            minItems=1,
                            maxItems=signing.MAX_KEYS,
                        ),
                        nullable=True,
                        description=(
                            "Write-only signing keys, oldest first; a secret is "
                            "base64 of 32 to 256 bytes, and an id alone keeps "
                            "the stored secret (docs/signing.rst).  Null, as "
                            "for every reserved setting, means unset."
                        ),
                    ),
                    "_require_signed_posts": {"type": "boolean", "nullable": True},
                },
            },
            "QueueList": _object(
                ["queues", "links"],
                queues=_array(
                    _object(
                        ["name", "href"],
                        name=_STRING,
                        href=_STRING,
                        metadata={"type": "object"},
                    )
                ),
                links=links,
                count=integer,
            ),
            "QueueStats": _object(
                ["messages"],
                messages=_object(
                    ["free", "claimed", "delayed", "total"],
                    free=integer,
                    claimed=integer,
                    delayed=integer,
                    total=integer,
                    oldest=statsMessage,
                    newest=statsMessage,
                ),
            ),
            "JSONPatch": _array(patchOperation, minItems=1),
            "ClaimOptions": {
                "type": "object",
                "nullable": True,
                "properties": {
                    "ttl": _bounded(limits.minClaimTTL, limits.maxClaimTTL),
                    "grace": dict(
                        _bounded(limits.minClaimGrace, limits.maxClaimGrace),
                        description=(
                            f"Under /v1.1 a claim needs a grace of at least "
                            f"{V1_1.minClaimGrace}, and renewing one brings a "
                            "grace out of range within it."
                        ),
                    ),
                },
            },
            "Claim": _object(
                ["id", "href", "ttl", "grace", "age", "messages"],
                id=_STRING,
                href=_STRING,
                ttl=integer,
                grace=integer,
                age=integer,
                messages=_array(_ref("Message")),
            ),
            "Health": _object(
                ["storage_reachable", "operation_status"],
                storage_reachable={"type": "boolean"},
                operation_status={"type": "object"},
                error=_STRING,
            ),
            "Ring": _object(
                ["scheme", "version", "nodes"],
                scheme={"type": "string", "nullable": True},
                parameters={"type": "object"},
                key=_STRING,
                version={"type": "string", "nullable": True},
                node=_STRING,
                nodes=_array(
                    _object(
                        ["name", "weight", "url"],
                        name=_STRING,
                        weight=_bounded(1, 1000),
                        url={"type": "string", "nullable": True},
                    )
                ),
            ),
            "Versions": _object(["versions"], versions={"type": "array"}),
            "ShareRequest": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "paths": _array(
                        {"type": "string", "enum": sorted(presigned.SHAREABLE)}
                    ),
                    "methods": _array(
                        {"type": "string", "enum": sorted(presigned.METHODS)}
                    ),
                    "expires": {"type": "string", "format": "date-time"},
                },
            },
            "SignedURL": _object(
                ["paths", "methods", "project", "expires", "signature"],
                paths=_array(_STRING),
                methods=_array(_STRING),
                project=_STRING,
                expires=_STRING,
                signature=_STRING,
            ),
        }
    }


def _operation(
    summary: str,
    responses: dict,
    parameters: Optional[list] = None,
    body: Optional[dict] = None,
) -> dict:
    operation: dict = {"summary": summary, "responses": dict(responses)}
    operation["responses"]["default"] = _ERROR_RESPONSE
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    return operation


def _queueParam(limits: Limits) -> dict:
    return _param(
        "queue",
        "path",
        {
            "type": "string",
            "pattern": r"^[a-zA-Z0-9_.-]+$",
            "minLength": 1,
            "maxLength": limits.maxQueueNameLength,
        },
        required=True,
    )


def _queueResources(limits: Limits) -> dict:
    """
    The queue resources, relative to C{/{version}} or
    C{/{version}/projects/{project_id}}.
    """
    queue = _queueParam(limits)
    messageId = _param("message_id", "path", {"type": "string"}, required=True)
    claimId = _param("claim_id", "path", {"type": "string"}, required=True)
    # Booleans are read case-insensitively (see marconi.core.text).
    boolean = {"type": "string", "pattern": _anyCase(TRUE_WORDS | FALSE_WORDS)}
    # The safety level of a write (see marconi.core.durability).
    safety = _param(
        "safety",
        "query",
        {"type": "string", "pattern": _anyCase(LEVELS)},
        description=(
            "When the write is acknowledged: fast (applied, maybe not yet "
            "on disk), durable (on disk, as the store makes it durable) or "
            "replicated (also on a replica; 400 where the store has none). "
            "By default the node's [storage] durability."
        ),
    )

    def limit(high: int) -> dict:
        return _param(
            "limit", "query", {"type": "integer", "minimum": 1, "maximum": high}
        )

    tags = _param("tags", "query", {"type": "string"})
    # Long-polling (docs/longpoll.rst).
    wait = _param(
        "wait",
        "query",
        _bounded(0, min(limits.maxWait, MAXIMUM_WAIT)),
        description="Seconds to wait for a message when there is none yet.",
    )
    jsonBody = {
        "required": False,
        "content": {
            _JSON: {"schema": {"$ref": "#/components/schemas/NewQueueMetadata"}}
        },
    }
    return {
        "/queues": {
            "get": _operation(
                "List the project's queues.",
                {"200": _json("QueueList", "A page of queues.")},
                [
                    limit(limits.maxQueuesPerPage),
                    _param("marker", "query", {"type": "string"}),
                    _param("detailed", "query", boolean),
                    _param("with_count", "query", boolean),
                    _param(
                        "name",
                        "query",
                        {
                            "type": "string",
                            "pattern": r"^[a-zA-Z0-9_.-]*$",
                            "maxLength": limits.maxQueueNameLength,
                        },
                        description=(
                            "v2 only: keep the queues whose name contains "
                            "this (the count counts them)."
                        ),
                    ),
                    _param(
                        "metadata",
                        "query",
                        {"type": "object", "additionalProperties": _STRING},
                        style="form",
                        explode=True,
                        description=(
                            "v2 only: every other parameter keeps the queues "
                            "whose metadata has that key with that value (a "
                            "value of digits compares as a number); at most "
                            "20."
                        ),
                    ),
                ],
            )
        },
        "/queues/{queue}/purge": {
            "parameters": [queue],
            "post": _operation(
                "Purge the queue's messages (with their claims) and/or its "
                "subscriptions, keeping the queue and its metadata; with no "
                "body, both.",
                {"204": _empty("Purged (also when the queue does not exist).")},
                body={
                    "required": False,
                    "content": {
                        _JSON: {"schema": {"$ref": "#/components/schemas/Purge"}}
                    },
                },
            ),
        },
        "/queues/{queue}": {
            "parameters": [queue],
            "put": _operation(
                "Create a queue, with optional metadata.",
                {"201": _empty("Created."), "204": _empty("It already existed.")},
                body=jsonBody,
            ),
            "get": _operation(
                "The queue's metadata.",
                {"200": _json("QueueMetadata", "The metadata.")},
            ),
            "patch": _operation(
                "Change the queue's metadata with a JSON patch.",
                {"200": _json("QueueMetadata", "The new metadata.")},
                body={
                    "required": True,
                    "content": {
                        _PATCH: {"schema": {"$ref": "#/components/schemas/JSONPatch"}}
                    },
                },
            ),
            "delete": _operation(
                "Delete the queue and its messages.", {"204": _empty("Deleted.")}
            ),
        },
        "/queues/{queue}/stats": {
            "parameters": [queue],
            "get": _operation(
                "Message counts of the queue.",
                {"200": _json("QueueStats", "The counts.")},
            ),
        },
        "/queues/{queue}/messages": {
            "parameters": [queue],
            "post": _operation(
                "Post a batch of messages.",
                {"201": _json("Resources", "The hrefs of the new messages.")},
                [safety],
                body={
                    "required": True,
                    "content": {
                        _JSON: {"schema": {"$ref": "#/components/schemas/NewMessages"}}
                    },
                },
            ),
            "get": _operation(
                "List messages (or get several by id with ids=).",
                {"200": _json("MessageList", "A page of messages.")},
                [
                    limit(limits.maxMessagesPerPage),
                    _param(
                        "marker",
                        "query",
                        {"type": "string", "pattern": "^([0-9]{1,19})?$"},
                    ),
                    _param("echo", "query", boolean),
                    _param("include_claimed", "query", boolean),
                    _param("include_delayed", "query", boolean),
                    tags,
                    wait,
                    _param("ids", "query", {"type": "string"}),
                ],
            ),
            "delete": _operation(
                "Delete messages by id (ids=, claim_ids=), or pop some (pop=).",
                {
                    "200": _json("PoppedList", "The popped messages."),
                    "204": _empty("Deleted."),
                },
                [
                    _param("ids", "query", {"type": "string"}),
                    _param("claim_ids", "query", {"type": "string"}),
                    _param(
                        "pop",
                        "query",
                        {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": limits.maxMessagesPerClaim,
                        },
                    ),
                    tags,
                    safety,
                    wait,
                ],
            ),
        },
        "/queues/{queue}/messages/{message_id}": {
            "parameters": [queue, messageId],
            "get": _operation(
                "One message.", {"200": _json("Message", "The message.")}
            ),
            "delete": _operation(
                "Delete one message (with claim_id= if it is claimed).",
                {"204": _empty("Deleted, or it did not exist.")},
                [_param("claim_id", "query", {"type": "string"}), safety],
            ),
        },
        "/queues/{queue}/claims": {
            "parameters": [queue],
            "post": _operation(
                "Claim messages.",
                {
                    "201": _json("MessageList", "The claimed messages."),
                    "204": _empty("Nothing to claim."),
                },
                [limit(limits.maxMessagesPerClaim), tags, safety, wait],
                body={
                    "required": False,
                    "content": {
                        _JSON: {"schema": {"$ref": "#/components/schemas/ClaimOptions"}}
                    },
                },
            ),
        },
        "/queues/{queue}/share": {
            "parameters": [queue],
            "post": _operation(
                "A pre-signed URL on the queue: the paths, methods, project, "
                "expiry and signature a client sends back in the URL-Paths, "
                "URL-Methods, X-Project-ID, URL-Expires and URL-Signature "
                "headers (400 when the node has no [signed_url] secret_key).",
                {"200": _json("SignedURL", "The signed grant.")},
                body={
                    "required": False,
                    "content": {
                        _JSON: {"schema": {"$ref": "#/components/schemas/ShareRequest"}}
                    },
                },
            ),
        },
        "/queues/{queue}/claims/{claim_id}": {
            "parameters": [queue, claimId],
            "get": _operation("A live claim.", {"200": _json("Claim", "The claim.")}),
            "patch": _operation(
                "Renew a claim.",
                {"204": _empty("Renewed.")},
                body={
                    "required": True,
                    "content": {
                        _JSON: {"schema": {"$ref": "#/components/schemas/ClaimOptions"}}
                    },
                },
            ),
            "delete": _operation(
                "Release a claim.", {"204": _empty("Released, or it did not exist.")}
            ),
        },
    }


def _identity(limits: Limits, projectInPath: bool) -> list:
    printable = r"^[\x21-\x7e]+$"
    # With the project in the path, an empty X-Project-ID is ignored and
    # any other must name the same project.
    project = {
        "type": "string",
        "minLength": 0 if projectInPath else 1,
        "maxLength": limits.maxProjectIdLength,
        "pattern": r"^([\x21-\x7e]+)?$" if projectInPath else printable,
    }
    return [
        _param("X-Project-ID", "header", project, required=not projectInPath),
        _param(
            "Client-ID",
            "header",
            {
                "type": "string",
                "minLength": 1,
                "maxLength": limits.maxClientIdLength,
                "pattern": printable,
            },
            required=True,
        ),
    ]


def _auditResource(limits: Limits, extra: list, inPath: bool) -> dict:
    """
    The audit river (v2 only), under C{prefix} with the parameters
    C{extra} of its path.
    """
    v2 = _param("version", "path", {"type": "string", "enum": ["v2"]}, required=True)
    text = {"type": "string"}
    seconds = {"type": "number", "minimum": 0}
    query = [
        _param(
            "limit",
            "query",
            {"type": "integer", "minimum": 1, "maximum": limits.maxMessagesPerPage},
        ),
        _param("marker", "query", {"type": "string", "maxLength": 2048}),
        _param("queue", "query", text),
        _param("action", "query", {"type": "string", "enum": list(audit.ACTIONS)}),
        _param("since", "query", seconds),
        _param("until", "query", seconds),
        _param("tags", "query", text),
    ]
    return {
        "parameters": [v2] + extra[1:] + _identity(limits, inPath),
        "get": _operation(
            "The project's audit river: its actions and state changes, oldest "
            "first, without message bodies; in a cluster, gathered from every "
            "node (partial is true, with missing_nodes, when a node did not "
            "answer). Markers are opaque.",
            {"200": _json("AuditList", "A page of events.")},
            query,
        ),
    }


def _extensionResources(limits: Limits, extra: list, inPath: bool) -> dict:
    """
    The resources extensions serve (v2 only; see L{marconi.extensions}),
    by path: answered by the extension when the node enables it, else 404 "Not enabled".
    """
    v2 = _param("version", "path", {"type": "string", "enum": ["v2"]}, required=True)
    found: dict = {}
    for name, route, methods in extensions.ROUTES:
        path = re.sub(r"<(\w+)>", r"{\1}", route)
        ids = [
            _param(n, "path", {"type": "string", "minLength": 1}, required=True)
            for n in re.findall(r"<(\w+)>", route)
            if n != "queue"
        ]
        item = found.setdefault(
            path,
            {
                "parameters": [v2]
                + extra[1:]
                + [_queueParam(limits)]
                + ids
                + _identity(limits, inPath)
            },
        )
        for method in methods:
            body = None
            if method in ("POST", "PUT", "PATCH"):
                body = {
                    "content": {_JSON: {"schema": {"type": "object"}}},
                    "required": False,
                }
            item[method.lower()] = _operation(
                f"Served by the {name} extension (docs/{name}.rst).",
                {
                    "200": {
                        "description": "The extension's answer.",
                        "content": {_JSON: {"schema": {"type": "object"}}},
                    },
                    "404": _json(
                        "Error",
                        f"No such resource, or the {name} extension is not enabled.",
                    ),
                },
                body=body,
            )
    return found


def _shardingResources(version: dict) -> dict:
    """
    Zaqar's pools and flavors, which every method answers with 404 and a
    description: the cluster's ring places queues instead.
    """
    notImplemented = {
        "404": _json("Error", "Marconi has no pools or flavors (docs/api.rst).")
    }
    paths = {}
    for kind in ("pools", "flavors"):
        for path, params in (
            (f"/{{version}}/{kind}", [version]),
            (
                f"/{{version}}/{kind}/{{name}}",
                [version, _param("name", "path", _STRING, required=True)],
            ),
        ):
            item: dict = {"parameters": params}
            for method in ("get", "put", "patch", "delete"):
                item[method] = _operation(
                    f"Not served: Zaqar's {kind}.", notImplemented
                )
            paths[path] = item
    return paths


def _versionParam(serves: Callable) -> dict:
    """
    The C{version} path parameter, naming the versions whose policy
    C{serves}.
    """
    names = [name for name, policy in POLICIES.items() if serves(policy)]
    return _param("version", "path", {"type": "string", "enum": names}, required=True)


def document(limits: Optional[Limits] = None) -> dict:
    """
    The OpenAPI 3.0 document of the API, with the given limits.
    """
    limits = limits or Limits()
    version = _versionParam(lambda policy: True)
    # Queue PATCH is routed only under the versions that have it.
    patchVersion = _versionParam(lambda policy: policy.queuePatch)
    shareVersion = _versionParam(lambda policy: policy.name in presigned.VERSIONS)
    purgeVersion = _versionParam(lambda policy: policy.purge)
    projectId = _param(
        "project_id",
        "path",
        {
            "type": "string",
            "minLength": 1,
            "maxLength": limits.maxProjectIdLength,
            "pattern": r"^[\x21-\x2e\x30-\x7e]+$",
        },
        required=True,
    )
    paths: dict = {
        "/": {
            "get": _operation(
                "The API versions.",
                {"300": _json("Versions", "The versions served.", xml=False)},
            )
        },
        "/{version}": {
            "parameters": [version],
            "get": _operation(
                "The JSON-Home document of the version.",
                {
                    "200": {
                        "description": "JSON-Home.",
                        "content": {
                            "application/json-home": {"schema": {"type": "object"}}
                        },
                    }
                },
            ),
        },
        "/{version}/ping": {
            "parameters": [version],
            "get": _operation(
                "Liveness.",
                {"204": _empty("Alive."), "503": _empty("Storage unreachable.")},
            ),
        },
        "/{version}/health": {
            "parameters": [version],
            "get": _operation(
                "Health of the node and its storage.",
                {
                    "200": _json("Health", "Healthy."),
                    "503": _json("Health", "Storage unreachable."),
                },
            ),
        },
        "/{version}/ring": {
            "parameters": [version],
            "get": _operation(
                "The cluster's ring, for clients that send each queue's "
                "requests to its owner; a node on its own answers a null "
                "scheme and version and no nodes.",
                {"200": _json("Ring", "The ring.")},
            ),
        },
        OPENAPI_PATH: {
            "get": _operation(
                "This document.",
                {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {_JSON: {"schema": {"type": "object"}}},
                    }
                },
            )
        },
    }
    for prefix, extra, inPath in (
        ("/{version}", [version], False),
        ("/{version}/projects/{project_id}", [version, projectId], True),
    ):
        for path, item in _queueResources(limits).items():
            item = copy.deepcopy(item)
            item["parameters"] = (
                extra + item.get("parameters", []) + _identity(limits, inPath)
            )
            if path == "/queues/{queue}":
                item["patch"]["parameters"] = [patchVersion]
            if path == "/queues/{queue}/share":
                item["post"]["parameters"] = [shareVersion]
            if path == "/queues/{queue}/purge":
                item["post"]["parameters"] = [purgeVersion]
            paths[prefix + path] = item
        paths[prefix + "/audit"] = _auditResource(limits, extra, inPath)
        for path, item in _extensionResources(limits, extra, inPath).items():
            paths[prefix + path] = item

    paths.update(_shardingResources(version))
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Marconi",
            "version": "2",
            "description": (
                "The HTTP API of a Marconi node: OpenStack Zaqar v2 (and v1.1) "
                "compatible queues, messages and claims, with tags and the "
                "project in the URL.  Every error is a JSON object with a "
                "title and a description (in XML where XML was negotiated).  "
                "Answers are JSON, or XML (the "
                "typed form of docs/media.rst) when Accept prefers "
                "application/xml; request bodies are read as XML when their "
                "Content-Type is application/xml, may be gzip'd "
                "(Content-Encoding: gzip, limited inflated), and answers of "
                "1024 bytes or more are gzip'd when Accept-Encoding admits "
                "gzip."
            ),
        },
        "paths": paths,
        "components": _components(limits),
    }


def operations(doc: dict) -> set:
    """
    The C{(path, METHOD)} pairs a document describes.
    """
    methods = {"get", "put", "post", "patch", "delete", "head", "options"}
    return {
        (path, method.upper())
        for path, item in doc["paths"].items()
        for method in item
        if method in methods
    }
