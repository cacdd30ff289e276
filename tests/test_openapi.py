"""
The OpenAPI document: served by the node, and true to the routes.
"""

import re

from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi.api import openapi
from marconi.api.app import MarconiAPI
from marconi.core.limits import Limits
from tests.apihelpers import Node

_VARIABLE = re.compile(r"<(?:[^:>]+:)?([^>]+)>")
_IGNORED_METHODS = {"HEAD", "OPTIONS"}


def routedOperations() -> set:
    """
    The C{(path, METHOD)} pairs the Klein application routes, with werkzeug
    variables written as OpenAPI templates.
    """
    found = set()
    for rule in MarconiAPI.app.url_map.iter_rules():
        path = _VARIABLE.sub(r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in _IGNORED_METHODS:
                found.add((path, method))
    return found


class DocumentTests(SynchronousTestCase):
    def test_routesAreDocumented(self) -> None:
        """
        Every route of the application is an operation of the document.
        """
        missing = routedOperations() - openapi.operations(openapi.document())
        self.assertEqual(missing, set())

    def test_documentedAreRouted(self) -> None:
        """
        Every operation of the document is a route of the application.
        """
        extra = openapi.operations(openapi.document()) - routedOperations()
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
