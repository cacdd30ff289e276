"""
XML and gzip through a cluster: a node that forwards a request to the
queue's owner passes the body on inflated and the answer back in the
negotiated type, gzip'd for the client if it asks.
"""

import gzip as stdgzip
from io import BytesIO

from twisted.internet import reactor
from twisted.web.client import (
    Agent,
    FileBodyProducer,
    HTTPConnectionPool,
    readBody,
)
from twisted.web.http_headers import Headers

from marconi.api.media import gzip, xml
from tests.integration.test_cluster import (
    CLIENT,
    PROJECT,
    ClusterTestCase,
    queueOwnedBy,
)


class ForwardedMediaTests(ClusterTestCase):
    async def raw(self, name: str, method: bytes, path: str, body=None, **headers):
        """
        The status, headers and undecoded body of a request to node C{name}.
        """
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent(reactor, pool=pool)
        sent = Headers({"Client-ID": [CLIENT], "X-Project-ID": [PROJECT]})
        for header, value in headers.items():
            sent.setRawHeaders(header.replace("_", "-"), [value])
        producer = None
        if body is not None:
            producer = FileBodyProducer(BytesIO(body))
        url = (self.nodes[name].url + path).encode()
        response = await agent.request(method, url, sent, producer)
        content = await readBody(response)
        return response.code, response.headers, content

    async def test_forwardedXMLAndGzip(self) -> None:
        """
        A gzip'd XML post sent to a node that does not own the queue is
        stored by the owner and answered in XML; a listing through that
        node comes back as XML, gzip'd, with the bodies posted.
        """
        await self.startCluster()
        queue = queueOwnedBy("b")
        bodies = [{"i": i, "text": "\x01 \u00e9 " * 40} for i in range(10)]
        document = {"messages": [{"ttl": 300, "body": b} for b in bodies]}
        code, headers, answer = await self.raw(
            "a",
            b"POST",
            f"/v2/queues/{queue}/messages",
            stdgzip.compress(xml.dumps(document)),
            Content_Type="application/xml",
            Content_Encoding="gzip",
            Accept="application/xml",
        )
        self.assertEqual(code, 201, answer)
        self.assertEqual(
            headers.getRawHeaders("content-type"), ["application/xml; charset=UTF-8"]
        )
        self.assertEqual(len(xml.loads(answer)["resources"]), 10)
        code, headers, answer = await self.raw(
            "a",
            b"GET",
            f"/v2/queues/{queue}/messages?echo=true",
            Accept="application/xml",
            Accept_Encoding="gzip",
        )
        self.assertEqual(code, 200, answer)
        self.assertEqual(headers.getRawHeaders("content-encoding"), ["gzip"])
        listing = xml.loads(stdgzip.decompress(answer))
        self.assertGreater(len(stdgzip.decompress(answer)), gzip.THRESHOLD)
        self.assertEqual([m["body"] for m in listing["messages"]], bodies)
