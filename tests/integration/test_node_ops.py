"""
Logging and monitoring of the real daemon: C{twistd -n marconi} with a
C{[logging]} and a C{[monitoring]} section.
"""

import json
import os
import re

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_node import HEADERS, NodeTestCase


class OperationsTests(NodeTestCase):
    async def test_jsonLogAndMetrics(self) -> None:
        """
        The configured file driver receives twistd's log as JSON lines
        (in place of --logfile) with one access line per request, and the
        metrics listener serves what the traffic did.
        """
        config = os.path.join(self.directory, "marconi.ini")
        with open(config, "w") as f:
            f.write(
                "[logging]\n"
                "driver = file\n"
                "format = json\n"
                # The harness reads the node's port from node.log.
                f"path = {os.path.join(self.directory, 'node.log')}\n"
                "[monitoring]\n"
                "driver = prometheus\n"
                "listen = tcp:0:interface=127.0.0.1\n"
            )
        node = await self.startNode("--config", config)
        r, _ = await self.call(
            node,
            "POST",
            "/v2/queues/ops/messages",
            {"messages": [{"body": {"secret": "BODY-SECRET"}}]},
            headers=dict(HEADERS, **{"X-Auth-Token": "TOKEN-SECRET"}),
        )
        self.assertEqual(r.code, 201)
        requestId = r.headers.getRawHeaders("x-openstack-request-id")[0]
        [port] = re.findall(r"Metrics listening on tcp:127\.0\.0\.1:(\d+)", node.log())
        response = await self.http.get(f"http://127.0.0.1:{port}/metrics")
        text = (await response.content()).decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        self.assertEqual(
            samples[("marconi_messages_total", (("event", "posted"),))], 1.0
        )
        self.assertEqual(
            samples[
                (
                    "marconi_http_requests_total",
                    (("route", "postMessages"), ("status", "201")),
                )
            ],
            1.0,
        )
        reason = await node.stop()
        self.assertTrue(node.exitedCleanly(reason), node.log())
        log = node.log()
        records = [json.loads(line) for line in log.splitlines()]
        [access] = [r for r in records if r["namespace"] == "marconi.access"]
        self.assertEqual(
            (access["request_id"], access["project"], access["status"]),
            (requestId, "it", 201),
        )
        self.assertNotIn("SECRET", log)
