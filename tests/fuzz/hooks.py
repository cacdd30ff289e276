"""
Schemathesis hooks for fuzzing a Marconi node (loaded through the
C{SCHEMATHESIS_HOOKS} environment variable by L{tests.api.test_fuzz}): teach it
the two media types of the API that are JSON under another name.
"""

import json

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
