"""
Schema fuzzing of a live node with schemathesis, against the OpenAPI
document the node serves.
"""

import os
import shutil
import subprocess
import sys

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest

from tests.integration.test_node import NodeTestCase
from tests.nodeprocess import environment

#: The run's configuration: which answers refuse a request the schema forbids.
CONFIG = os.path.join(os.path.dirname(__file__), os.pardir, "fuzz", "schemathesis.toml")

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    )
)


def schemathesisCommand() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "st")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("st")
    try:
        import schemathesis  # noqa: F401
    except ImportError:
        found = None
    if found is None:
        raise SkipTest("schemathesis is not installed (pip install schemathesis)")
    return found


class FuzzTests(NodeTestCase):
    timeout = 180

    async def test_schemathesis(self) -> None:
        """
        Every operation of the document, fuzzed with valid and invalid
        parameters, headers and bodies (a fixed seed, a bounded number of
        examples): no 5xx, every status code, content type and response
        body as documented, and every request that breaks the schema
        refused.
        """
        st = schemathesisCommand()
        node = await self.startNode()
        env = environment()
        env["SCHEMATHESIS_HOOKS"] = "tests.fuzz.hooks"
        argv = [
            st, "--config-file", CONFIG,
            "run", node.url + "/v2/openapi.json", "--url", node.url,
            "--checks", CHECKS, "--phases", "coverage,fuzzing",
            "--max-examples", "5", "--seed", "1", "--max-time", "15",
            "--workers", "1", "--no-color",
        ]  # fmt: skip
        result = await deferToThread(
            subprocess.run, argv, env=env, capture_output=True, text=True,
            timeout=150, cwd=self.directory,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stdout[-6000:] + result.stderr)
        r, _ = await self.call(node, "GET", "/v2/ping")
        self.assertEqual(r.code, 204)
