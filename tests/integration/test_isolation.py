"""
Tenant isolation: every endpoint and method, called by one project with
another project's queue names, message ids and claim ids, on every storage
driver.

The matrix is built from the OpenAPI document, which a test keeps equal to
the routes, so a new route joins the matrix by being documented.

Entry points: on a single node every request is served where it arrives;
in a cluster (L{ClusterIsolationTests}) every row of the matrix runs through
each of the three nodes, so it crosses the forwarding path too.
"""

import json
import re
from typing import Any
from uuid import uuid4

from marconi.api import openapi
from marconi.core.limits import Limits
from tests.apihelpers import HTTPNode, Node
from tests.integration.test_cluster import ClusterTestCase
from tests.storage.stores import onEveryStore

VICTIM = "victim-project"
ATTACKER = "attacker-project"
QUEUE = "shared-name"
PATCH_TYPE = "application/openstack-messaging-v2.0-json-patch"

#: Headers an attacker might hope are read as identity or as a bypass
#: (Keystone's, Zaqar's signed URLs and EXTRA-SPEC, proxies', a cluster's).
FORGED = {
    "X-Roles": "admin",
    "X-Identity-Status": "Confirmed",
    "X-Tenant-Id": VICTIM,
    "X-Tenant-Name": VICTIM,
    "X-Tenant": VICTIM,
    "X-Auth-Project-Id": VICTIM,
    "X-Service-Project-Id": VICTIM,
    "X-User-Id": "root",
    # URL-Signature is read: any request carrying it is judged by its grant
    # alone (tests/api/test_presigned.py refuses empty and forged ones).
    "URL-Project": VICTIM,
    "EXTRA-SPEC": "x",
    "X-Forwarded-For": "127.0.0.1",
    "Forwarded": "for=127.0.0.1",
    "X-Marconi-Forwarded": "1",
    "X-Marconi-Project": VICTIM,
}

_ORDER = {"GET": 0, "PUT": 1, "POST": 2, "PATCH": 3, "DELETE": 4}


class IsolationMatrixMixin:
    timeout = 120

    async def makeStore(self) -> Any:
        raise NotImplementedError

    async def makeNode(self) -> Any:
        """
        The node the victim's data is put through (and the first entry
        point).
        """
        return Node(self, Limits(), store=await self.makeStore())

    def otherEntryPoints(self) -> list:
        """
        URLs of further nodes that serve the same data, by forwarding.
        """
        return []

    def forgedHeaders(self) -> dict:
        """
        The forged identity headers sent with header-project rows.
        """
        return FORGED

    async def setUpVictim(self) -> None:
        self.node = await self.makeNode()
        node = self.node
        self.secret = "SECRET-" + uuid4().hex
        self.metaSecret = "META-" + uuid4().hex
        r = await node.request(
            "PUT", f"/v2/queues/{QUEUE}", {"owner": self.metaSecret}, project=VICTIM
        )
        assert r.code == 201, r.body
        self.ids = await node.post(
            QUEUE,
            *(
                {"body": {"secret": self.secret, "n": n}, "tags": ["t"]}
                for n in range(6)
            ),
            project=VICTIM,
        )
        r = await node.request(
            "POST", f"/v2/queues/{QUEUE}/claims?limit=2", {"ttl": 600}, project=VICTIM
        )
        assert r.code == 201, r.body
        self.claimId = r.header("location").rsplit("/", 1)[1]
        self.claimed = [m["id"] for m in r.json["messages"]]
        self.before = await self.victimState()
        self.entryPoints = [node.url, *self.otherEntryPoints()]

    async def victimState(self) -> dict:
        node = self.node
        meta = await node.request("GET", f"/v2/queues/{QUEUE}", project=VICTIM)
        listing = await node.request(
            "GET",
            f"/v2/queues/{QUEUE}/messages?echo=true&include_claimed=true&limit=20",
            project=VICTIM,
        )
        claim = await node.request(
            "GET", f"/v2/queues/{QUEUE}/claims/{self.claimId}", project=VICTIM
        )
        return {
            "metadata": meta.json,
            "messages": [(m["id"], m["body"]) for m in listing.json["messages"]],
            "claim": (claim.code, sorted(m["id"] for m in claim.json["messages"])),
        }

    def rows(self) -> list:
        """
        Every (method, path template) of the API that names a queue,
        ordered reads first, then writes, then deletes.
        """
        ops = [
            (path, method)
            for path, method in openapi.operations(openapi.document())
            if "/queues" in path
        ]
        return sorted(ops, key=lambda op: (_ORDER[op[1]], op[0]))

    def fill(self, template: str, version: str, pathProject: str) -> str:
        return (
            template.replace("{version}", version)
            .replace("{project_id}", pathProject)
            .replace("{queue}", QUEUE)
            .replace("{message_id}", self.ids[0])
            .replace("{claim_id}", self.claimId)
        )

    def queryFor(self, method: str, template: str) -> str:
        ids = ",".join(self.ids)
        if template.endswith("/messages") and method == "GET":
            return f"?ids={ids}"
        if template.endswith("/messages") and method == "DELETE":
            return f"?ids={ids}&claim_ids={self.claimId}"
        if template.endswith("/messages/{message_id}") and method == "DELETE":
            return f"?claim_id={self.claimId}"
        return ""

    def bodyFor(self, method: str, template: str) -> tuple:
        if method == "PATCH" and template.endswith("{queue}"):
            patch = [{"op": "replace", "path": "/metadata/owner", "value": "x"}]
            return json.dumps(patch).encode(), {"Content-Type": PATCH_TYPE}
        if method == "POST" and template.endswith("/messages"):
            body = {"messages": [{"body": "attacker"}]}
        elif method == "POST" and template.endswith("/purge"):
            body = {"resource_types": ["messages", "subscriptions"]}
        elif method in ("POST", "PATCH"):
            body = {"ttl": 60}
        elif method == "PUT":
            body = {"attacker": True}
        else:
            return None, {}
        return json.dumps(body).encode(), {"Content-Type": "application/json"}

    def assertNoLeak(self, response: Any, what: str, supplied: str) -> None:
        """
        Nothing of the victim's is in C{response}: not its message bodies,
        not its queue metadata, and none of its ids the caller did not
        itself put in the request.
        """
        text = response.body.decode("utf-8", "replace") + " ".join(
            f"{k}:{v}" for k, v in response.headers.getAllRawHeaders()
        )
        for secret in (self.secret, self.metaSecret):
            self.assertNotIn(secret, text, what)
        for victimId in [*self.ids, self.claimId]:
            if victimId not in supplied:
                self.assertNotIn(victimId, text, what)

    async def test_matrix(self) -> None:
        """
        For every queue endpoint and method, in both API versions, with the
        project in a header (plus forged identity headers) and in the path:
        the other project's queue name, message ids and claim id give 404 on
        every by-id read and on claim renewal, a harmless answer elsewhere
        (an empty listing, an idempotent delete in the caller's own
        namespace), never a byte of the victim's data; and afterwards the
        victim's queue, messages and claim are exactly as they were.
        """
        await self.setUpVictim()
        node = self.node
        seen = 0
        for base in self.entryPoints:
            node.url = base
            for template, method in self.rows():
                for version in ("v2", "v1.1"):
                    inPath = "{project_id}" in template
                    path = self.fill(template, version, ATTACKER)
                    path += self.queryFor(method, template)
                    raw, headers = self.bodyFor(method, template)
                    if inPath:
                        project = None
                    else:
                        project = ATTACKER
                        headers = dict(headers, **self.forgedHeaders())
                    r = await node.request(
                        method, path, project=project, headers=headers, raw=raw
                    )
                    what = f"{method} {path} -> {r.code} {r.body[:200]!r}"
                    seen += 1
                    self.assertLess(r.code, 500, what)
                    self.assertNoLeak(r, what, path)
                    if re.search(
                        r"/(messages/\{message_id\}|claims/\{claim_id\})$", template
                    ):
                        if method in ("GET", "PATCH"):
                            self.assertEqual(r.code, 404, what)
                    if method == "GET" and template.endswith("/messages"):
                        self.assertEqual(r.code, 404, what)
                    if method == "GET" and template.endswith("/queues"):
                        self.assertIn("queues", r.json or {}, what)
                        names = [q["name"] for q in r.json["queues"]]
                        self.assertNotIn(QUEUE, names, what)
                    if method == "GET" and template.endswith("/stats"):
                        self.assertEqual(r.json["messages"]["total"], 0, what)
        self.assertEqual(seen, len(self.rows()) * 2 * len(self.entryPoints))
        node.url = self.entryPoints[0]
        self.assertEqual(await self.victimState(), self.before)

    async def test_projectMismatchRefused(self) -> None:
        """
        A path naming one project with an X-Project-ID naming another is
        refused, whichever of the two is the victim, for every queue
        endpoint; nothing leaks and nothing changes.
        """
        await self.setUpVictim()
        node = self.node
        for template, method in self.rows():
            if "{project_id}" not in template:
                continue
            for pathProject, headerProject in ((ATTACKER, VICTIM), (VICTIM, ATTACKER)):
                path = self.fill(template, "v2", pathProject)
                path += self.queryFor(method, template)
                raw, headers = self.bodyFor(method, template)
                r = await node.request(
                    method, path, project=headerProject, headers=headers, raw=raw
                )
                what = f"{method} {path} as {headerProject} -> {r.code}"
                self.assertEqual(r.code, 400, what)
                self.assertNoLeak(r, what, path)
        self.assertEqual(await self.victimState(), self.before)

    async def test_foreignClaimOnOwnMessage(self) -> None:
        """
        The victim's claim id is worthless on the attacker's own queue: it
        cannot delete, renew or read through it, and the victim's claim is
        untouched.
        """
        await self.setUpVictim()
        node = self.node
        [own] = await node.post(QUEUE, {"body": "mine"}, project=ATTACKER)
        r = await node.request(
            "POST", f"/v2/queues/{QUEUE}/claims", {"ttl": 60}, project=ATTACKER
        )
        self.assertEqual(r.code, 201)
        r = await node.request(
            "DELETE",
            f"/v2/queues/{QUEUE}/messages/{own}?claim_id={self.claimId}",
            project=ATTACKER,
        )
        # Refused as any claim id the project does not have (400).
        self.assertEqual(r.code, 400, r.body)
        r = await node.request(
            "GET", f"/v2/queues/{QUEUE}/messages/{own}", project=ATTACKER
        )
        self.assertEqual(r.json["body"], "mine")
        self.assertEqual(await self.victimState(), self.before)

    async def test_keyCollisions(self) -> None:
        """
        Project and queue names whose naive concatenation collides
        (C{a}/C{b.c} and C{a.b}/C{c}, and the like) are separate queues.
        """
        await self.setUpVictim()
        node = self.node
        pairs = [
            (("a", "b.c"), ("a.b", "c")),
            (("a:1", "q"), ("a", "1_q")),
            (("p", "x-y"), ("p-x", "y")),
            (("p", "9"), ("p9", "_")),
        ]
        for (p1, q1), (p2, q2) in pairs:
            await node.post(q1, {"body": f"{p1}/{q1}"}, project=p1)
            await node.post(q2, {"body": f"{p2}/{q2}"}, project=p2)
            for project, queue in ((p1, q1), (p2, q2)):
                r = await node.request(
                    "GET", f"/v2/queues/{queue}/messages?echo=true", project=project
                )
                bodies = [m["body"] for m in r.json["messages"]]
                self.assertEqual(bodies, [f"{project}/{queue}"])


onEveryStore(IsolationMatrixMixin, globals(), "IsolationTests")


class ClusterIsolationTests(IsolationMatrixMixin, ClusterTestCase):
    """
    The matrix through every node of a three-node cluster: requests for
    queues a node does not own are forwarded, signed, to their owner.
    """

    async def makeNode(self) -> Any:
        await self.startCluster()
        return HTTPNode(self, self.nodes["a"].url)

    def otherEntryPoints(self) -> list:
        return [self.nodes["b"].url, self.nodes["c"].url]

    def forgedHeaders(self) -> dict:
        # A cluster refuses unsigned X-Marconi-* headers outright (403,
        # tests.integration.test_cluster.ForgeryTests); leave them out here
        # so that every row really crosses the forwarding path.
        return {k: v for k, v in FORGED.items() if not k.startswith("X-Marconi-")}
