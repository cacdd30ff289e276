"""
The framework ceiling: a bare twisted.web resource that speaks just enough of
the Zaqar v2 message routes to be driven by every scenario of the benchmark.

It checks the two identity headers, parses and checks the JSON bodies the way
a real node has to, and answers with canned bodies of the same shape as a
node's answers.  It stores nothing, so what it costs per request is the cost
of Twisted's HTTP server plus JSON: the most a Marconi node on this reactor
can hope for.  Results of the benchmark are given as ratios to it.

Run it on its own with::

    python bench/baseline.py --port 0

With C{--klein} the same answers go through a Klein app instead, to show what
routing costs.  It prints C{listening on 127.0.0.1:PORT} once it listens and runs until it
is stopped (SIGINT or SIGTERM).  Access logging is off, as it would be on a
tuned node.
"""

import argparse
import json
import sys

from twisted.internet import reactor as _globalReactor
from twisted.web.resource import Resource
from twisted.web.server import Site

_JSON = b"application/json; charset=utf-8"
_IDS = ["%024x" % (0x5EED0000 + n) for n in range(20)]
_CLAIM_ID = "c1a1" + "0" * 20


def _messageJSON(queue: str, n: int, claimId: str | None = None) -> dict:
    href = "/v2/queues/%s/messages/%s" % (queue, _IDS[n % len(_IDS)])
    if claimId is not None:
        href += "?claim_id=" + claimId
    return {
        "id": _IDS[n % len(_IDS)],
        "href": href,
        "ttl": 3600,
        "age": 1,
        "body": {"event": "bench", "n": n},
        "checksum": "MD5:00000000000000000000000000000000",
    }


def _badRequest(request, description: str) -> bytes:
    request.setResponseCode(400)
    request.setHeader(b"content-type", _JSON)
    return json.dumps(
        {"title": "Invalid API request", "description": description}
    ).encode()


class BaselineResource(Resource):
    """
    Answers C{/v2/queues/Q/messages[/ID]} and C{/v2/queues/Q/claims} with
    canned bodies after the checks a node must make anyway.
    """

    isLeaf = True

    def render(self, request):
        if not request.getHeader(b"client-id") or not request.getHeader(
            b"x-project-id"
        ):
            return _badRequest(request, "Client-ID and X-Project-ID are required.")
        segments = request.postpath
        if len(segments) < 4 or segments[0] != b"v2" or segments[1] != b"queues":
            request.setResponseCode(404)
            return b""
        queue = segments[2].decode("ascii", "replace")
        collection = segments[3]
        method = request.method
        if collection == b"messages":
            if len(segments) == 4:
                if method == b"POST":
                    return self._post(request, queue)
                if method == b"GET":
                    return self._list(request, queue)
                if method == b"DELETE":
                    request.setResponseCode(204)
                    return b""
            elif len(segments) == 5:
                if method == b"GET":
                    request.setHeader(b"content-type", _JSON)
                    return json.dumps(_messageJSON(queue, 0)).encode()
                if method == b"DELETE":
                    request.setResponseCode(204)
                    return b""
        elif collection == b"claims" and len(segments) == 4 and method == b"POST":
            return self._claim(request, queue)
        request.setResponseCode(405)
        return b""

    def _post(self, request, queue: str) -> bytes:
        try:
            document = json.loads(request.content.read())
        except ValueError:
            return _badRequest(request, "Malformed JSON.")
        messages = document.get("messages") if isinstance(document, dict) else None
        if not isinstance(messages, list) or not messages:
            return _badRequest(request, "No messages.")
        for message in messages:
            if not isinstance(message, dict) or "body" not in message:
                return _badRequest(request, "A message needs a body.")
            ttl = message.get("ttl", 3600)
            if not isinstance(ttl, int) or not 60 <= ttl <= 1209600:
                return _badRequest(request, "Bad TTL.")
        ids = [_IDS[n % len(_IDS)] for n in range(len(messages))]
        base = "/v2/queues/%s/messages" % (queue,)
        request.setResponseCode(201)
        request.setHeader(b"content-type", _JSON)
        request.setHeader(b"location", ("%s?ids=%s" % (base, ",".join(ids))).encode())
        return json.dumps({"resources": [base + "/" + i for i in ids]}).encode()

    def _list(self, request, queue: str) -> bytes:
        limit = int(request.args.get(b"limit", [b"10"])[0])
        request.setHeader(b"content-type", _JSON)
        messages = [_messageJSON(queue, n) for n in range(min(limit, 20))]
        links = [{"rel": "next", "href": "/v2/queues/%s/messages?marker=1" % (queue,)}]
        return json.dumps({"messages": messages, "links": links}).encode()

    def _claim(self, request, queue: str) -> bytes:
        try:
            document = json.loads(request.content.read() or b"{}")
        except ValueError:
            return _badRequest(request, "Malformed JSON.")
        if not isinstance(document, dict):
            return _badRequest(request, "A claim is a JSON object.")
        limit = int(request.args.get(b"limit", [b"10"])[0])
        request.setResponseCode(201)
        request.setHeader(b"content-type", _JSON)
        request.setHeader(
            b"location", ("/v2/queues/%s/claims/%s" % (queue, _CLAIM_ID)).encode()
        )
        messages = [_messageJSON(queue, n, _CLAIM_ID) for n in range(min(limit, 20))]
        return json.dumps({"messages": messages}).encode()


class KleinBaseline:
    """
    The same answers routed through Klein, to measure what the routing layer
    costs on top of the bare resource.
    """

    from klein import Klein

    app = Klein()
    del Klein

    def __init__(self):
        self.bare = BaselineResource()

    def _checked(self, request, answer, *args):
        if not request.getHeader(b"client-id") or not request.getHeader(
            b"x-project-id"
        ):
            return _badRequest(request, "Client-ID and X-Project-ID are required.")
        return answer(request, *args)

    @app.route("/v2/queues/<queue>/messages", methods=["POST"])
    def post(self, request, queue):
        return self._checked(request, self.bare._post, queue)

    @app.route("/v2/queues/<queue>/messages", methods=["GET"])
    def list(self, request, queue):
        return self._checked(request, self.bare._list, queue)

    @app.route("/v2/queues/<queue>/messages/<id>", methods=["GET"])
    def get(self, request, queue, id):
        def answer(request):
            request.setHeader(b"content-type", _JSON)
            return json.dumps(_messageJSON(queue, 0)).encode()

        return self._checked(request, answer)

    @app.route("/v2/queues/<queue>/messages", methods=["DELETE"])
    @app.route("/v2/queues/<queue>/messages/<id>", methods=["DELETE"])
    def delete(self, request, queue, id=None):
        def answer(request):
            request.setResponseCode(204)
            return b""

        return self._checked(request, answer)

    @app.route("/v2/queues/<queue>/claims", methods=["POST"])
    def claim(self, request, queue):
        return self._checked(request, self.bare._claim, queue)


class QuietSite(Site):
    """
    A L{Site} that writes no access log.
    """

    def log(self, request):
        pass


def main(argv=None, reactor=None) -> int:
    if reactor is None:
        reactor = _globalReactor
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument(
        "--klein",
        action="store_true",
        help="route through Klein instead of a bare resource",
    )
    options = parser.parse_args(argv)
    if options.klein:
        resource = KleinBaseline().app.resource()
    else:
        resource = BaselineResource()
    port = reactor.listenTCP(
        options.port, QuietSite(resource), interface=options.interface
    )
    address = port.getHost()
    sys.stdout.write("listening on %s:%d\n" % (address.host, address.port))
    sys.stdout.flush()
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
