"""
Send the same requests to OpenStack Zaqar and to Marconi and print where
the answers differ: status codes, header names and JSON shapes (keys and
value types, list lengths, and the titles of error answers).

    python -m tests.zaqar_compare [--version v2|v1.1|all]

v2 is compared with Zaqar 23.0.1 and v1.1 with Zaqar 21.0.3, the last
release serving it (see L{tests.zaqarpeer}; the first run installs them,
which takes minutes).  A difference is allowed only when C{docs/api.rst}
lists it, under "Where Marconi differs from Zaqar", as C{``<version> <step>``}
beside its reason; the command exits 1 when it finds one that is not
listed (and when a listed one no longer occurs), 0 otherwise.
"""

import argparse
import http.client
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

from tests.nodeprocess import ROOT

CLIENT = "3381af92-2b9e-11e3-b191-71861300734c"
DOCS = os.path.join(ROOT, "docs", "api.rst")
PATCH_TYPE = "application/openstack-messaging-v2.0-json-patch"
#: Headers that say how the answer travelled, not what it is.
TRANSPORT_HEADERS = frozenset(
    (
        "date",
        "server",
        "connection",
        "content-length",
        "transfer-encoding",
        "keep-alive",
        "x-openstack-request-id",
        # Zaqar's framework adds "Vary: Accept" to its error answers, which
        # are never cached.
        "vary",
    )
)
_ALLOWED = re.compile(r"``(v2|v1\.1) ([a-z0-9-]+)``")


@dataclass
class Step:
    """
    One request of the corpus.  C{path} is relative to the version
    (C{/queues/{q}}) and may name what earlier answers gave: C{{q}} the
    queue, C{{m0}}, C{{m1}} posted message ids, C{{claim}} a claim id and
    C{{claimed}} a message it holds.
    """

    name: str
    method: str
    path: str
    body: Any = None
    raw: Optional[bytes] = None
    headers: dict = field(default_factory=dict)


def _messages(*items: dict) -> dict:
    return {"messages": list(items)}


def corpus() -> list[Step]:
    """
    The requests compared, in order, for one version.
    """
    msg = {"body": {"event": "x"}, "ttl": 300}
    big = _messages({"body": "x" * 270_000, "ttl": 300})
    return [
        Step("ping", "GET", "/ping"),
        # Queues.
        Step("put-queue", "PUT", "/queues/{q}", {"owner": "a"}),
        Step("put-queue-again", "PUT", "/queues/{q}", {"owner": "b"}),
        Step("get-queue", "GET", "/queues/{q}"),
        Step("head-queue", "HEAD", "/queues/{q}"),
        Step("get-missing-queue", "GET", "/queues/{q}-nosuch"),
        Step("list-queues", "GET", "/queues"),
        Step("list-queues-detailed", "GET", "/queues?detailed=true"),
        Step("list-queues-limit-0", "GET", "/queues?limit=0"),
        Step("list-queues-limit-1000", "GET", "/queues?limit=1000"),
        Step("put-queue-bad-name", "PUT", "/queues/a@b", {}),
        Step("put-queue-long-name", "PUT", "/queues/" + "q" * 65, {}),
        Step("put-queue-bad-json", "PUT", "/queues/{q}-2", raw=b"{"),
        Step("put-queue-array", "PUT", "/queues/{q}-2", [1]),
        Step(
            "patch-queue",
            "PATCH",
            "/queues/{q}",
            raw=b'[{"op": "add", "path": "/metadata/k", "value": 1}]',
            headers={"Content-Type": PATCH_TYPE},
        ),
        Step("stats-empty", "GET", "/queues/{q}/stats"),
        Step("stats-missing-queue", "GET", "/queues/{q}-nosuch/stats"),
        # Messages.
        Step("post-messages", "POST", "/queues/{q}/messages", _messages(msg, msg)),
        Step("post-bare-list", "POST", "/queues/{q}-b/messages", [msg]),
        Step("post-no-messages-key", "POST", "/queues/{q}/messages", {"x": 1}),
        Step("post-empty-list", "POST", "/queues/{q}/messages", _messages()),
        Step(
            "post-ttl-low",
            "POST",
            "/queues/{q}/messages",
            _messages({"body": 1, "ttl": 10}),
        ),
        Step(
            "post-ttl-high",
            "POST",
            "/queues/{q}/messages",
            _messages({"body": 1, "ttl": 99_999_999}),
        ),
        Step(
            "post-ttl-string",
            "POST",
            "/queues/{q}/messages",
            _messages({"body": 1, "ttl": "60"}),
        ),
        Step(
            "post-without-body",
            "POST",
            "/queues/{q}/messages",
            _messages({"ttl": 60}),
        ),
        Step("post-too-large", "POST", "/queues/{q}/messages", big),
        Step("post-empty", "POST", "/queues/{q}/messages", raw=b""),
        Step("post-bad-json", "POST", "/queues/{q}/messages", raw=b"{"),
        # v1.1 reads only a message's ttl and body.
        Step(
            "post-delayed-tagged",
            "POST",
            "/queues/{q}-d/messages",
            _messages({"body": 1, "ttl": 300, "delay": 300, "tags": ["a"]}),
        ),
        Step("list-delayed-tagged", "GET", "/queues/{q}-d/messages?echo=true"),
        Step(
            "post-delay-string",
            "POST",
            "/queues/{q}-d/messages",
            _messages({"body": 1, "ttl": 300, "delay": "x"}),
        ),
        Step("list-messages", "GET", "/queues/{q}/messages?echo=true"),
        Step("list-messages-no-echo", "GET", "/queues/{q}/messages"),
        Step("list-messages-limit-0", "GET", "/queues/{q}/messages?limit=0"),
        Step("list-messages-limit-21", "GET", "/queues/{q}/messages?limit=21"),
        Step(
            "list-messages-bad-marker",
            "GET",
            "/queues/{q}/messages?echo=true&marker=invalid",
        ),
        Step(
            "list-missing-queue-bad-marker",
            "GET",
            "/queues/{q}-nosuch/messages?marker=invalid",
        ),
        Step("list-missing-queue", "GET", "/queues/{q}-nosuch/messages"),
        Step("get-message", "GET", "/queues/{q}/messages/{m0}"),
        Step("get-missing-message", "GET", "/queues/{q}/messages/{q}"),
        Step("get-messages-by-ids", "GET", "/queues/{q}/messages?ids={m0},{m1}"),
        Step("get-messages-missing-ids", "GET", "/queues/{q}/messages?ids={q}"),
        Step("stats-with-messages", "GET", "/queues/{q}/stats"),
        # Claims.
        Step("post-other", "POST", "/queues/{q}-g/messages", _messages(msg)),
        Step("claim-grace-0", "POST", "/queues/{q}-g/claims", {"ttl": 60, "grace": 0}),
        Step(
            "claim-grace-59", "POST", "/queues/{q}-g/claims", {"ttl": 60, "grace": 59}
        ),
        Step("claim-ttl-10", "POST", "/queues/{q}/claims", {"ttl": 10, "grace": 60}),
        Step(
            "claim-ttl-50000",
            "POST",
            "/queues/{q}/claims",
            {"ttl": 50_000, "grace": 60},
        ),
        Step(
            "claim-grace-50000",
            "POST",
            "/queues/{q}/claims",
            {"ttl": 60, "grace": 50_000},
        ),
        Step("claim-limit-0", "POST", "/queues/{q}/claims?limit=0", {"ttl": 60}),
        Step("claim-limit-21", "POST", "/queues/{q}/claims?limit=21", {"ttl": 60}),
        Step("claim-bad-json", "POST", "/queues/{q}/claims", raw=b"{"),
        Step(
            "claim",
            "POST",
            "/queues/{q}/claims?limit=1",
            {"ttl": 60, "grace": 60},
        ),
        Step("get-claim", "GET", "/queues/{q}/claims/{claim}"),
        Step(
            "renew-claim",
            "PATCH",
            "/queues/{q}/claims/{claim}",
            {"ttl": 120, "grace": 60},
        ),
        Step(
            "renew-claim-grace-50000",
            "PATCH",
            "/queues/{q}/claims/{claim}",
            {"ttl": 120, "grace": 50_000},
        ),
        Step("stats-claimed", "GET", "/queues/{q}/stats"),
        Step(
            "delete-claimed-without-claim", "DELETE", "/queues/{q}/messages/{claimed}"
        ),
        Step(
            "delete-claimed-other-claim",
            "DELETE",
            "/queues/{q}/messages/{claimed}?claim_id=5c6b1a2c9f9b4a0e8d7c6b5a",
        ),
        Step("release-claim", "DELETE", "/queues/{q}/claims/{claim}"),
        Step("get-released-claim", "GET", "/queues/{q}/claims/{claim}"),
        Step("claim-missing-queue", "POST", "/queues/{q}-nosuch/claims", {"ttl": 60}),
        # Deleting messages.
        Step("delete-message", "DELETE", "/queues/{q}/messages/{m1}"),
        Step("delete-messages-no-ids", "DELETE", "/queues/{q}/messages"),
        Step(
            "delete-messages-ids-and-pop",
            "DELETE",
            "/queues/{q}/messages?ids={m0}&pop=1",
        ),
        Step("pop-21", "DELETE", "/queues/{q}/messages?pop=21"),
        Step("pop", "DELETE", "/queues/{q}/messages?pop=1"),
        Step("delete-messages-by-ids", "DELETE", "/queues/{q}/messages?ids={m0}"),
        # Identity and negotiation.
        Step(
            "no-client-id", "GET", "/queues/{q}/messages", headers={"Client-ID": None}
        ),
        Step(
            "client-id-not-uuid",
            "GET",
            "/queues/{q}/messages",
            headers={"Client-ID": "1234"},
        ),
        Step("no-project", "GET", "/queues", headers={"X-Project-ID": None}),
        Step("not-acceptable", "GET", "/queues", headers={"Accept": "text/plain"}),
        Step("unknown-path", "GET", "/nosuch"),
        Step("delete-queue", "DELETE", "/queues/{q}"),
        Step("delete-missing-queue", "DELETE", "/queues/{q}"),
    ]


@dataclass
class Answer:
    status: int
    headers: frozenset
    shape: Any


def shape(value: Any) -> Any:
    """
    The shape of a JSON value: objects by key, lists item by item, scalars
    by type; an error's C{title} by value, since clients read it.
    """
    if isinstance(value, dict):
        result = {key: shape(item) for key, item in sorted(value.items())}
        if set(value) == {"title", "description"}:
            result["title"] = value["title"]
        return result
    if isinstance(value, list):
        return [shape(item) for item in value]
    if value is None:
        return "null"
    return type(value).__name__


class Session:
    """
    The corpus run against one server: the ids its answers gave.
    """

    def __init__(self, url: str, version: str, project: str, queue: str) -> None:
        self.host, self.port = url.removeprefix("http://").split(":")
        self.version = version
        self.project = project
        self.names = {"q": queue, "m0": "none", "m1": "none", "claim": "none"}
        self.names["claimed"] = "none"

    def send(self, step: Step) -> Answer:
        path = f"/{self.version}" + step.path.format(**self.names)
        headers = {"Client-ID": CLIENT, "X-Project-ID": self.project}
        body = step.raw
        if step.body is not None:
            body = json.dumps(step.body).encode()
            headers["Content-Type"] = "application/json"
        for name, value in step.headers.items():
            if value is None:
                headers.pop(name, None)
            else:
                headers[name] = value
        connection = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
        try:
            connection.request(step.method, path, body=body, headers=headers)
            response = connection.getresponse()
            content = response.read()
            names = (
                frozenset(name.lower() for name, _ in response.getheaders())
                - TRANSPORT_HEADERS
            )
            location = response.getheader("location")
        finally:
            connection.close()
        try:
            document = json.loads(content) if content else None
        except ValueError:
            document = content.decode("latin-1")[:80]
        self._remember(step, response.status, document, location)
        return Answer(response.status, names, shape(document))

    def _remember(
        self, step: Step, status: int, document: Any, location: Optional[str]
    ) -> None:
        if status != 201:
            return
        if step.name == "post-messages":
            ids = [href.rsplit("/", 1)[1] for href in document["resources"]]
            self.names["m0"], self.names["m1"] = ids[0], ids[1]
        elif step.name == "claim" and location:
            self.names["claim"] = location.rsplit("/", 1)[1]
            self.names["claimed"] = document["messages"][0]["id"]


def differences(zaqar: Answer, marconi: Answer) -> list[str]:
    """
    How Marconi's answer differs from Zaqar's, one line per aspect.
    """
    found = []
    if zaqar.status != marconi.status:
        found.append(f"status: Zaqar {zaqar.status}, Marconi {marconi.status}")
    if zaqar.headers != marconi.headers:
        found.append(
            "headers: Zaqar only "
            f"{sorted(zaqar.headers - marconi.headers)}, Marconi only "
            f"{sorted(marconi.headers - zaqar.headers)}"
        )
    if zaqar.shape != marconi.shape:
        found.append(
            f"body: Zaqar {json.dumps(zaqar.shape)}, "
            f"Marconi {json.dumps(marconi.shape)}"
        )
    return found


def allowed(text: str) -> set:
    """
    The differences C{docs/api.rst} lists: C{(version, step)} pairs.
    """
    section = text.split("Where Marconi differs from Zaqar", 1)[-1]
    return {(m.group(1), m.group(2)) for m in _ALLOWED.finditer(section)}


def compare(zaqarURL: str, marconiURL: str, version: str, tag: str) -> dict:
    """
    Run the corpus against both servers; the differences by step name.
    """
    queue = f"cmp-{tag}-{version.replace('.', '')}"
    project = f"compare-{tag}"
    zaqar = Session(zaqarURL, version, project, queue)
    marconi = Session(marconiURL, version, project, queue)
    found = {}
    for step in corpus():
        lines = differences(zaqar.send(step), marconi.send(step))
        if lines:
            found[step.name] = lines
    return found


def report(version: str, found: dict, documented: set, out: Any) -> bool:
    """
    Print the differences of one version; whether all are documented and
    every documented one still occurs.
    """
    ok = True
    for name, lines in found.items():
        listed = (version, name) in documented
        ok = ok and listed
        mark = "documented" if listed else "NOT DOCUMENTED"
        print(f"{version} {name} [{mark}]", file=out)
        for line in lines:
            print(f"    {line}", file=out)
    for listedVersion, name in sorted(documented):
        if listedVersion == version and name not in found:
            ok = False
            print(f"{version} {name} [documented, but no longer differs]", file=out)
    print(f"{version}: {len(found)} steps differ of {len(corpus())}", file=out)
    return ok


def main(argv: Optional[list] = None) -> int:
    from tests.zaqarpeer import RELEASES, SideBySide

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", choices=["v2", "v1.1", "all"], default="all")
    options = parser.parse_args(argv)
    versions = list(RELEASES) if options.version == "all" else [options.version]
    with open(DOCS, encoding="utf-8") as f:
        documented = allowed(f.read())
    ok = True
    for version in versions:
        print(f"== {version}: Zaqar {RELEASES[version]} and Marconi", flush=True)
        with SideBySide(RELEASES[version]) as servers:
            found = compare(
                servers.zaqar.url, servers.marconi.url, version, str(os.getpid())
            )
        ok = report(version, found, documented, sys.stdout) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
