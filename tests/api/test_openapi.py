"""
The OpenAPI document: served by the node, and true to the routes.
"""

import json
import re

from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi.api import homedoc, openapi
from marconi.api.app import MarconiAPI
from marconi.api.versions import POLICIES
from marconi.core.limits import Limits
from tests.apihelpers import Node

_VARIABLE = re.compile(r"<(?:[^:>]+:)?([^>]+)>")
_IGNORED_METHODS = {"HEAD", "OPTIONS"}


def _byVersion(path: str, versions: list) -> list:
    """
    C{path} under each of C{versions}, when it has a C{{version}}.
    """
    if "{version}" not in path:
        return [path]
    return [path.replace("{version}", version, 1) for version in versions]


def routedOperations() -> set:
    """
    The C{(path, METHOD)} pairs the Klein application routes, with werkzeug
    variables written as OpenAPI templates but the version written out for
    each version the route serves.
    """
    found = set()
    for rule in MarconiAPI.app.url_map.iter_rules():
        path = _VARIABLE.sub(r"{\1}", rule.rule)
        served = []
        if "version" in rule.arguments:
            pattern = rule._converters["version"].regex
            served = [v for v in POLICIES if re.fullmatch(pattern, v)]
        for method in rule.methods or ():
            if method not in _IGNORED_METHODS:
                found.update((p, method) for p in _byVersion(path, served))
    return found


def documentedOperations(doc: dict) -> set:
    """
    The C{(path, METHOD)} pairs of an OpenAPI document, the version written
    out for each version its C{version} parameter names (an operation's
    own parameter before its path's).
    """
    found = set()
    for path, method in openapi.operations(doc):
        item = doc["paths"][path]
        params = item[method.lower()].get("parameters", []) + item.get("parameters", [])
        served = next(
            (p["schema"]["enum"] for p in params if p["name"] == "version"), []
        )
        found.update((p, method) for p in _byVersion(path, served))
    return found


class DocumentTests(SynchronousTestCase):
    def test_routesAreDocumented(self) -> None:
        """
        Every route of the application is an operation of the document.
        """
        missing = routedOperations() - documentedOperations(openapi.document())
        self.assertEqual(missing, set())

    def test_documentedAreRouted(self) -> None:
        """
        Every operation of the document is a route of the application.
        """
        extra = documentedOperations(openapi.document()) - routedOperations()
        self.assertEqual(extra, set())

    def test_pathParametersDeclared(self) -> None:
        """
        Each templated path declares exactly its path parameters, as
        required parameters.
        """
        doc = openapi.document()
        for path, item in doc["paths"].items():
            names = set(re.findall(r"{([^}]+)}", path))
            for method, operation in item.items():
                if method == "parameters":
                    continue
                params = item.get("parameters", []) + operation.get("parameters", [])
                declared = {p["name"] for p in params if p["in"] == "path"}
                self.assertEqual(declared, names, (path, method))
                self.assertTrue(all(p["required"] for p in params if p["in"] == "path"))
                self.assertIn("default", operation["responses"])

    def test_limitsInDocument(self) -> None:
        """
        The document states the node's configured limits, not the defaults.
        """
        doc = openapi.document(Limits(maxMessagesPerPost=7))
        schema = doc["components"]["schemas"]["NewMessages"]
        self.assertEqual(schema["properties"]["messages"]["maxItems"], 7)


def homeOperations(version: str) -> set:
    """
    The C{(path, METHOD)} pairs of the JSON-Home document of C{version},
    with its query templates dropped.
    """
    home = json.loads(homedoc.home(version))
    found = set()
    for resource in home["resources"].values():
        template = resource["href-template"]
        path = re.sub(r"{\?[^}]*}", "", template)
        variables = set(re.findall(r"{\??([^}]+)}", template))
        names = {n for group in variables for n in group.split(",")}
        if names != set(resource["href-vars"]):
            raise AssertionError(f"{template} declares {resource['href-vars']}")
        for method in resource["hints"]["allow"]:
            found.add((path, method))
    return found


def _anonymous(operations: set) -> set:
    """
    The operations with every path variable unnamed.
    """
    return {(re.sub(r"{[^}]+}", "{}", path), method) for path, method in operations}


class HomeDocumentTests(SynchronousTestCase):
    """
    The JSON-Home document describes exactly the versioned routes (those
    with the project in a header; the home document itself, the OpenAPI
    document and the versions list are not among its resources).
    """

    def routed(self, version: str) -> set:
        return _anonymous(
            {
                (path, method)
                for path, method in routedOperations()
                if path.startswith(f"/{version}/")
                and not path.startswith(f"/{version}/projects/")
                and path != openapi.OPENAPI_PATH
            }
        )

    def test_routesAreInHome(self) -> None:
        """
        Every versioned route is a resource of the home document.
        """
        for version in ("v2", "v1.1"):
            missing = self.routed(version) - _anonymous(homeOperations(version))
            self.assertEqual(missing, set(), version)

    def test_homeIsRouted(self) -> None:
        """
        Every resource and method of the home document is routed.
        """
        for version in ("v2", "v1.1"):
            extra = _anonymous(homeOperations(version)) - self.routed(version)
            self.assertEqual(extra, set(), version)

    def test_queuePatchOnlyV2(self) -> None:
        """
        Queue C{PATCH} is in the v2 home document, routed and documented
        for v2 only: v1.1 never had it.
        """
        self.assertIn(("/v2/queues/{}", "PATCH"), _anonymous(homeOperations("v2")))
        self.assertNotIn(
            ("/v1.1/queues/{}", "PATCH"), _anonymous(homeOperations("v1.1"))
        )
        for operations in (
            routedOperations(),
            documentedOperations(openapi.document()),
        ):
            self.assertIn(("/v2/queues/{queue}", "PATCH"), operations)
            self.assertNotIn(("/v1.1/queues/{queue}", "PATCH"), operations)
            self.assertIn(("/v1.1/queues/{queue}", "GET"), operations)


class ServedTests(TestCase):
    async def test_served(self) -> None:
        """
        C{GET /v2/openapi.json} answers the document as JSON with no project
        or client header.
        """
        node = Node(self, Limits(maxMessagesPerPost=9))
        r = await node.request("GET", openapi.OPENAPI_PATH, project=None, client=None)
        self.assertEqual(r.code, 200)
        self.assertTrue(r.header("content-type").startswith("application/json"))
        self.assertEqual(r.json["openapi"], "3.0.3")
        self.assertEqual(r.json, openapi.document(Limits(maxMessagesPerPost=9)))
