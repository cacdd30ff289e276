"""
The versions document (C{GET /}) and the JSON-Home document of each API
version (C{GET /v2/}).
"""

from marconi.api import presigned
from marconi.api.render import document
from marconi.api.versions import POLICIES

MEDIA_TYPE = "application/vnd.openstack.messaging-v2+json"


def versions() -> bytes:
    def version(ident: str, status: str, updated: str) -> dict:
        return {
            "id": ident,
            "status": status,
            "updated": updated,
            "media-types": [{"base": "application/json", "type": MEDIA_TYPE}],
            "links": [{"href": f"/v{ident}/", "rel": "self"}],
        }

    return document(
        {
            "versions": [
                version("1.1", "SUPPORTED", "2014-09-24T04:06:47Z"),
                version("2", "CURRENT", "2014-09-24T04:06:47Z"),
            ]
        }
    )


def _resource(
    template: str, variables: dict, allow: list, formats: bool = True
) -> dict:
    hints: dict = {"allow": allow}
    if formats:
        hints["formats"] = {"application/json": {}}
    return {"href-template": template, "href-vars": variables, "hints": hints}


def home(version: str) -> bytes:
    base = f"/{version}"
    param = "param/"
    queue = {"queue_name": param + "queue_name"}
    resources = {
        "rel/queues": _resource(
            base
            + (
                "/queues{?marker,limit,detailed,with_count,name}"
                if POLICIES[version].queueFilters
                else "/queues{?marker,limit,detailed,with_count}"
            ),
            {
                "marker": param + "marker",
                "limit": param + "queue_limit",
                "detailed": param + "detailed",
                "with_count": param + "with_count",
                **({"name": param + "name"} if POLICIES[version].queueFilters else {}),
            },
            ["GET"],
        ),
        "rel/queue": _resource(
            base + "/queues/{queue_name}",
            queue,
            ["PUT", "GET", "PATCH", "DELETE"]
            if POLICIES[version].queuePatch
            else ["PUT", "GET", "DELETE"],
        ),
        "rel/queue_stats": _resource(
            base + "/queues/{queue_name}/stats", queue, ["GET"]
        ),
        "rel/messages": _resource(
            base
            + "/queues/{queue_name}/messages"
            + "{?marker,limit,echo,include_claimed,include_delayed,tags}",
            dict(
                queue,
                marker=param + "marker",
                limit=param + "messages_limit",
                echo=param + "echo",
                include_claimed=param + "include_claimed",
                include_delayed=param + "include_delayed",
                tags=param + "tags",
            ),
            ["GET"],
        ),
        "rel/post_messages": _resource(
            base + "/queues/{queue_name}/messages", queue, ["POST"]
        ),
        "rel/messages_delete": _resource(
            base + "/queues/{queue_name}/messages{?ids,pop,tags}",
            dict(queue, ids=param + "ids", pop=param + "pop", tags=param + "tags"),
            ["DELETE"],
        ),
        "rel/message": _resource(
            base + "/queues/{queue_name}/messages/{message_id}{?claim_id}",
            dict(queue, message_id=param + "message_id", claim_id=param + "claim_id"),
            ["GET", "DELETE"],
        ),
        "rel/claim": _resource(
            base + "/queues/{queue_name}/claims{?limit,tags}",
            dict(queue, limit=param + "claim_limit", tags=param + "tags"),
            ["POST"],
        ),
        "rel/claim_item": _resource(
            base + "/queues/{queue_name}/claims/{claim_id}",
            dict(queue, claim_id=param + "claim_id"),
            ["GET", "PATCH", "DELETE"],
        ),
        "rel/ping": _resource(base + "/ping", {}, ["GET"], formats=False),
        "rel/health": _resource(base + "/health", {}, ["GET"]),
        "rel/ring": _resource(base + "/ring", {}, ["GET"]),
    }
    if POLICIES[version].purge:
        resources["rel/queue_purge"] = _resource(
            base + "/queues/{queue_name}/purge", queue, ["POST"]
        )
    # Answered with 404 and why: the ring places queues (docs/api.rst).
    for kind in ("pools", "flavors"):
        notServed = ["GET", "PUT", "PATCH", "DELETE"]
        resources[f"rel/{kind}"] = _resource(base + f"/{kind}", {}, notServed)
        resources[f"rel/{kind[:-1]}"] = _resource(
            base + f"/{kind}/{{name}}", {"name": param + "name"}, notServed
        )
    if version in presigned.VERSIONS:
        resources["rel/queue_share"] = _resource(
            base + "/queues/{queue_name}/share", queue, ["POST"]
        )
    if version == "v2":
        # Served by the subscriptions extension, or 404 "Not enabled" where it is off.
        subscription = dict(queue, subscription_id=param + "subscription_id")
        resources["rel/subscriptions"] = _resource(
            base + "/queues/{queue_name}/subscriptions", queue, ["GET", "POST"]
        )
        resources["rel/subscription"] = _resource(
            base + "/queues/{queue_name}/subscriptions/{subscription_id}",
            subscription,
            ["GET", "PATCH", "DELETE"],
        )
        resources["rel/subscription_confirm"] = _resource(
            base + "/queues/{queue_name}/subscriptions/{subscription_id}/confirm",
            subscription,
            ["PUT"],
        )
        resources["rel/audit"] = _resource(
            base + "/audit{?marker,limit,queue,action,since,until,tags}",
            {
                name: param + name
                for name in (
                    "marker",
                    "limit",
                    "queue",
                    "action",
                    "since",
                    "until",
                    "tags",
                )
            },
            ["GET"],
        )
    return document({"resources": resources})
