"""
The filters of C{GET /v2/queues} (C{name} and metadata), through the real
site on a loopback socket.
"""

from urllib.parse import parse_qs, urlsplit

from twisted.trial.unittest import TestCase

from tests.apihelpers import Node


class QueueFilterTests(TestCase):
    async def setUp(self) -> None:
        self.node = Node(self)
        for name, meta in [
            ("orders-eu", {"region": "eu", "tier": 1}),
            ("orders-us", {"region": "us", "tier": 2}),
            ("billing", {"region": "eu", "tier": "1"}),
            ("orders-eu-dlq", {"region": "eu", "tier": 1, "dlq": True}),
            ("reports", {}),
        ]:
            r = await self.node.request("PUT", f"/v2/queues/{name}", meta)
            assert r.code == 201, r.body
        r = await self.node.request("PUT", "/v2/queues/orders-eu", {}, project="p2")
        assert r.code == 201

    async def names(self, query: str, project: str = "p", version: str = "v2"):
        r = await self.node.request(
            "GET", f"/{version}/queues?{query}", project=project
        )
        self.assertEqual(r.code, 200, r.body)
        return [q["name"] for q in r.json["queues"]]

    async def test_nameContains(self) -> None:
        """
        C{name} keeps the queues whose name contains it (as Zaqar's MongoDB
        driver matches it), of the caller's project only; an empty name
        filters nothing.
        """
        self.assertEqual(
            await self.names("name=orders"),
            ["orders-eu", "orders-eu-dlq", "orders-us"],
        )
        self.assertEqual(await self.names("name=eu"), ["orders-eu", "orders-eu-dlq"])
        self.assertEqual(await self.names("name=-us"), ["orders-us"])
        self.assertEqual(await self.names("name=nothing"), [])
        self.assertEqual(await self.names("name=orders", project="p2"), ["orders-eu"])
        self.assertEqual(len(await self.names("name=")), 5)

    async def test_metadata(self) -> None:
        """
        Every other parameter is a metadata filter: the key must be there
        with that value; digits compare as a number (never as the string
        or a boolean); several filters must all hold.
        """
        self.assertEqual(
            await self.names("region=eu"), ["billing", "orders-eu", "orders-eu-dlq"]
        )
        self.assertEqual(await self.names("tier=1"), ["orders-eu", "orders-eu-dlq"])
        self.assertEqual(await self.names("region=eu&tier=2"), [])
        self.assertEqual(await self.names("dlq=true"), [])
        self.assertEqual(await self.names("missing=x"), [])
        self.assertEqual(
            await self.names("name=orders&region=eu&detailed=true"),
            ["orders-eu", "orders-eu-dlq"],
        )

    async def test_pagingAndCount(self) -> None:
        """
        A filtered listing pages by the last queue shown, its next link
        carries the filters, and C{with_count} counts the matching queues.
        """
        path = "/v2/queues?name=o&region=eu&limit=1&with_count=true"
        seen = []
        while True:
            r = await self.node.request("GET", path)
            self.assertEqual(r.code, 200, r.body)
            self.assertEqual(r.json["count"], 2)
            seen += [q["name"] for q in r.json["queues"]]
            if not r.json["queues"]:
                break
            [link] = r.json["links"]
            query = parse_qs(urlsplit(link["href"]).query)
            self.assertEqual((query["name"], query["region"]), (["o"], ["eu"]))
            path = link["href"] + "&with_count=true"
        self.assertEqual(seen, ["orders-eu", "orders-eu-dlq"])

    async def test_detailed(self) -> None:
        """
        A filtered detailed listing shows each queue's metadata.
        """
        r = await self.node.request("GET", "/v2/queues?name=billing&detailed=true")
        [queue] = r.json["queues"]
        self.assertEqual(queue["metadata"], {"region": "eu", "tier": "1"})

    async def test_auditRiverNotListed(self) -> None:
        """
        The audit river's queue never shows in a filtered listing, even
        when its name would match.
        """
        await self.node.bus.audit.flush()
        self.assertEqual(await self.names("name=audit"), [])
        r = await self.node.request("GET", "/v2/queues?name=r&with_count=true")
        self.assertEqual(r.json["count"], 4)

    async def test_badFilters(self) -> None:
        """
        A name that cannot be part of a queue name, or too many metadata
        filters, is refused with 400.
        """
        for query in ("name=a*b", "name=" + "a" * 65, "name=%C3%A9"):
            r = await self.node.request("GET", f"/v2/queues?{query}")
            self.assertEqual(r.code, 400, query)
            self.assertEqual(sorted(r.json), ["description", "title"])
        many = "&".join(f"k{i}=v" for i in range(21))
        r = await self.node.request("GET", f"/v2/queues?{many}")
        self.assertEqual(r.code, 400)
        r = await self.node.request("GET", "/v2/queues?%FF=1")
        self.assertEqual(r.code, 400)

    async def test_v11Ignores(self) -> None:
        """
        Zaqar's v1.1 had no queue filters: they are ignored there.
        """
        self.assertEqual(
            len(await self.names("name=orders&region=us", version="v1.1")), 5
        )
