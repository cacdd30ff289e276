"""
Schemathesis hooks for fuzzing a Marconi node (loaded through the
C{SCHEMATHESIS_HOOKS} environment variable by L{tests.api.test_fuzz}): teach it
the two media types of the API that are JSON under another name.
"""

import json
import re

import schemathesis
from schemathesis.transport.requests import json_serializer

PATCH = "application/openstack-messaging-v2.0-json-patch"


@schemathesis.serializer(PATCH)
def patchSerializer(ctx, value):
    headers = json_serializer(ctx, value)
    return headers


@schemathesis.deserializer("application/json-home")
def jsonHome(ctx, response):
    return json.loads(response.content)


@schemathesis.hook
def before_call(ctx, case, kwargs):
    """
    A valid long-polling C{wait} becomes 0: the node's clock is real, and a
    request that waits for a message nobody posts would outlast the
    fuzzer's read timeout.  Values out of range or not numbers are sent as
    generated (they are refused at once).
    """
    query = case.query or {}
    value = query.get("wait")
    text = str(value).strip() if isinstance(value, (int, str)) else ""
    if re.fullmatch("[0-9]{1,6}", text) and 0 < int(text) <= 20:
        query["wait"] = 0
