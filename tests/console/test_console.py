"""
The operator console: its activity counters (with a L{Clock}), its HTTP
side on a real daemon, and the page itself in a real headless Chromium.
"""

import os
import shutil
import tempfile
from typing import Any

import treq
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from marconi.console.activity import Activity, ObservedRouter
from marconi.console.web import staticFiles
from marconi.core.limits import Limits
from marconi.core.messaging import Messaging
from marconi.storage.memory.store import MemoryStore
from tests.apihelpers import HTTPNode
from tests.nodeprocess import NodeProcess

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


class ActivityTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.activity = Activity(self.clock, bucketSeconds=10, buckets=3)

    def test_buckets(self) -> None:
        """
        Counts land in the bucket of the clock's time, series are oldest
        first with the current bucket last, and counts older than the
        window are gone.
        """
        self.activity.counted("p", "q", "posted", 2)
        self.clock.advance(10)
        self.activity.counted("p", "q", "posted", 3)
        self.activity.counted("p", "q", "deleted", 1)
        series = self.activity.queue("p", "q")["series"]
        self.assertEqual(series["posted"], [0, 2, 3])
        self.assertEqual(series["deleted"], [0, 0, 1])
        self.assertEqual(series["claimed"], [0, 0, 0])
        self.clock.advance(30)
        self.assertEqual(self.activity.queue("p", "q")["series"]["posted"], [0, 0, 0])

    def test_projectsApart(self) -> None:
        """
        The same queue name in two projects has two sets of numbers.
        """
        self.activity.counted("a", "q", "posted", 5)
        self.activity.claimed("a", "q", "c1", 60)
        other = self.activity.queue("b", "q")
        self.assertEqual(other["series"]["posted"], [0, 0, 0])
        self.assertEqual(other["claims"], [])
        self.assertEqual(self.activity.queue("a", "q")["series"]["posted"], [0, 0, 5])

    def test_boundedQueues(self) -> None:
        """
        Past C{maxQueues}, the least recently active queue is forgotten.
        """
        activity = Activity(self.clock, maxQueues=2)
        activity.counted("p", "one", "posted", 1)
        activity.counted("p", "two", "posted", 1)
        activity.counted("p", "one", "posted", 1)
        activity.counted("p", "three", "posted", 1)
        self.assertEqual(sum(activity.queue("p", "two")["series"]["posted"]), 0)
        self.assertEqual(sum(activity.queue("p", "one")["series"]["posted"]), 2)

    def test_claims(self) -> None:
        """
        Live claims are listed newest first with their age; a renewal
        restarts a claim's time, a release or expiry removes it, and at
        most C{maxClaims} are kept.
        """
        activity = Activity(self.clock, maxClaims=2)
        activity.claimed("p", "q", "c1", 30)
        self.clock.advance(5)
        activity.claimed("p", "q", "c2", 100)
        self.assertEqual(
            activity.queue("p", "q")["claims"],
            [{"id": "c2", "age": 0, "ttl": 100}, {"id": "c1", "age": 5, "ttl": 30}],
        )
        self.clock.advance(26)
        self.assertEqual([c["id"] for c in activity.queue("p", "q")["claims"]], ["c2"])
        activity.renewed("p", "q", "c2", 50)
        self.assertEqual(activity.queue("p", "q")["claims"][0]["age"], 0)
        activity.released("p", "q", "c2")
        self.assertEqual(activity.queue("p", "q")["claims"], [])
        for name in ("c3", "c4", "c5"):
            activity.claimed("p", "q", name, 60)
        self.assertEqual(
            [c["id"] for c in activity.queue("p", "q")["claims"]], ["c5", "c4"]
        )

    def test_listensToBus(self) -> None:
        """
        Listening to a real L{Messaging}'s events, the activity counts what
        it did: posts, claims (recording the claim), deletions and pops,
        per project and queue; deleting the queue forgets it.  A listener
        that stopped counts nothing more.
        """
        store = MemoryStore()
        store.startService()
        self.addCleanup(store.stopService)
        bus = Messaging(store, self.clock, Limits())
        stop = bus.events.listen(self.activity.observe)
        observed = bus
        client = "3381af92-2b9e-11e3-b191-71861300734c"
        document = {"messages": [{"body": i, "ttl": 300} for i in range(4)]}

        def run(coroutine: Any) -> Any:
            from twisted.internet.defer import Deferred

            return self.successResultOf(Deferred.fromCoroutine(coroutine))

        ids = run(observed.postMessages("p", "q", document, 100, client))
        claim = run(observed.createClaim("p", "q", {"ttl": 60}, 2, ()))
        run(observed.deleteMessage("p", "q", claim.messages[0].id, claim.id))
        run(observed.popMessages("p", "q", 1))
        series = self.activity.queue("p", "q")["series"]
        self.assertEqual(
            (series["posted"][-1], series["claimed"][-1], series["deleted"][-1]),
            (len(ids), 2, 2),
        )
        self.assertEqual(
            [c["id"] for c in self.activity.queue("p", "q")["claims"]], [claim.id]
        )
        # Its last message deleted, the claim holds nothing and is not listed.
        run(observed.deleteMessage("p", "q", claim.messages[1].id, claim.id))
        self.assertEqual(self.activity.queue("p", "q")["claims"], [])
        self.assertEqual(sum(self.activity.queue("other", "q")["series"]["posted"]), 0)
        run(observed.deleteQueue("p", "q"))
        self.assertEqual(sum(self.activity.queue("p", "q")["series"]["posted"]), 0)
        stop()
        run(observed.postMessages("p", "q", document, 100, client))
        self.assertEqual(sum(self.activity.queue("p", "q")["series"]["posted"]), 0)

    def test_observedRouter(self) -> None:
        """
        The router wrapper counts requests forwarded to each peer and
        forwarded requests received, and passes the router's answers on.
        """

        class Router:
            def verify(self, request: Any) -> Any:
                return request

            def forward(self, request: Any, project: str, owner: str) -> str:
                return f"{owner}:{request}"

            def route(self, project: str, queue: str) -> str:
                return "b"

        router = ObservedRouter(Router(), self.activity)
        self.assertEqual(router.forward("r", "p", "b"), "b:r")
        router.forward("r", "p", "b")
        router.forward("r", "p", "c")
        self.assertEqual(router.route("p", "q"), "b")
        self.assertIsNone(router.verify(None))
        self.assertEqual(router.verify("p"), "p")
        forwarding = self.activity.forwarding()
        self.assertEqual(forwarding["forwarded"], {"b": [0, 0, 2], "c": [0, 0, 1]})
        self.assertEqual(forwarding["received"], [0, 0, 1])

    def test_staticFiles(self) -> None:
        """
        The page, its script and its style are found in the package.
        """
        files = staticFiles()
        self.assertEqual(
            {"index.html", "console.js", "console.css"} - set(files), set()
        )
        self.assertTrue(files["console.js"][0].startswith(b"text/javascript"))
        # No inline script: the page loads its one script from a file.
        self.assertNotIn(b"<script>", files["index.html"][1])


class NodeCase(TestCase):
    timeout = 120

    async def startNode(self) -> Any:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        args = [
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--storage",
            "sqlite:" + os.path.join(directory, "marconi.sqlite3"),
        ]
        node = await NodeProcess(self, directory, args).start()
        return node, HTTPNode(self, node.url)


class ConsoleHTTPTests(NodeCase):
    async def test_served(self) -> None:
        """
        The daemon serves the console at /console/ with a strict CSP and
        nosniff; /console redirects there; the API beside it still works;
        unknown console paths are JSON 404s.
        """
        node, api = await self.startNode()

        async def fetch(path: str) -> tuple:
            response = await api.http.get(node.url + path, allow_redirects=False)
            return response, await treq.content(response)

        def header(response: Any, name: str) -> str:
            return response.headers.getRawHeaders(name, [""])[0]

        page, body = await fetch("/console/")
        self.assertEqual(page.code, 200)
        self.assertIn(b'src="static/console.js"', body)
        csp = header(page, "content-security-policy")
        self.assertIn("script-src 'self'", csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertEqual(header(page, "x-content-type-options"), "nosniff")
        bare, _ = await fetch("/console")
        self.assertEqual((bare.code, header(bare, "location")), (301, "/console/"))
        script, _ = await fetch("/console/static/console.js")
        self.assertEqual(
            header(script, "content-type"), "text/javascript; charset=UTF-8"
        )
        missing = await api.request("GET", "/console/static/nope.js")
        self.assertEqual(missing.code, 404)
        self.assertEqual(missing.json["title"], "Not found")
        self.assertEqual((await api.request("GET", "/v2/queues")).code, 200)

    async def test_activityIsolated(self) -> None:
        """
        A queue's activity is counted for its project and shown only to
        it: another project asking for the same queue name sees nothing,
        and a request without a project is a 400.
        """
        node, api = await self.startNode()
        await api.post("orders", {"body": 1}, {"body": 2}, project="acme")
        claim = await api.request(
            "POST", "/v2/queues/orders/claims?limit=1", {"ttl": 60}, project="acme"
        )
        self.assertEqual(claim.code, 201)
        path = "/console/api/queues/orders/activity"
        own = await api.request("GET", path, project="acme")
        self.assertEqual(own.code, 200)
        self.assertEqual(sum(own.json["series"]["posted"]), 2)
        self.assertEqual(sum(own.json["series"]["claimed"]), 1)
        self.assertEqual(len(own.json["claims"]), 1)
        other = await api.request("GET", path, project="intruder")
        self.assertEqual(sum(other.json["series"]["posted"]), 0)
        self.assertEqual(other.json["claims"], [])
        anonymous = await api.request("GET", path, project=None)
        self.assertEqual(anonymous.code, 400)
        self.assertIn("description", anonymous.json)
        badName = await api.request("GET", "/console/api/queues/b%20d/activity")
        self.assertEqual(badName.code, 400)


class Browser:
    """
    A headless Chromium driven by Selenium; its methods block, so the
    tests call them in a thread.
    """

    def __init__(self, profile: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        self.driver = webdriver.Chrome(
            service=Service(executable_path=CHROMEDRIVER), options=options
        )

    def open(self, url: str, project: str, fragment: str = "#/queues") -> None:
        from selenium.webdriver.common.by import By

        self.driver.get(url + "/console/" + fragment)
        field = self.driver.find_element(By.ID, "project")
        field.clear()
        field.send_keys(project)
        self.driver.find_element(By.CSS_SELECTOR, "#who button").click()

    def text(self, selector: str, expected: str, timeout: float = 10) -> str:
        """
        Wait until the element at C{selector} shows C{expected}.
        """
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, timeout).until(
            expected_conditions.text_to_be_present_in_element(
                (By.CSS_SELECTOR, selector), expected
            ),
            f"{selector} did not show {expected!r}",
        )
        return self.driver.find_element(By.CSS_SELECTOR, selector).text

    def run(self, script: str) -> Any:
        return self.driver.execute_script(script)

    def quit(self) -> None:
        self.driver.quit()


class BrowserTests(NodeCase):
    """
    The page in a real browser against a real daemon.
    """

    def setUp(self) -> None:
        missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
        if missing:
            raise SkipTest(
                f"{' and '.join(missing)} not installed (apt-get install "
                "chromium chromium-driver)"
            )
        try:
            import selenium  # noqa: F401
        except ImportError:
            raise SkipTest("selenium is not installed (pip install selenium)") from None

    async def browser(self) -> Browser:
        profile = tempfile.mkdtemp(prefix="marconi-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        browser = await deferToThread(Browser, profile)
        self.addCleanup(deferToThread, browser.quit)
        return browser

    async def test_depthsAndLiveUpdate(self) -> None:
        """
        The queues page shows each queue's free, claimed and delayed
        depths for the project typed in, never another project's queues,
        and updates when a message is posted, without reloading.
        """
        node, api = await self.startNode()
        await api.post(
            "orders", *[{"body": i, "ttl": 300} for i in range(3)], project="acme"
        )
        await api.post("orders", {"body": "later", "delay": 120}, project="acme")
        claim = await api.request(
            "POST", "/v2/queues/orders/claims?limit=1", {"ttl": 60}, project="acme"
        )
        self.assertEqual(claim.code, 201)
        await api.post("secret", {"body": "theirs"}, project="other")
        browser = await self.browser()
        await deferToThread(browser.open, node.url, "acme")
        row = 'tr[data-queue="orders"]'
        await deferToThread(browser.text, row + " td.free", "2")
        self.assertEqual(
            await deferToThread(browser.text, row + " td.claimed", "1"), "1"
        )
        self.assertEqual(
            await deferToThread(browser.text, row + " td.delayed", "1"), "1"
        )
        self.assertEqual(await deferToThread(browser.text, row + " td.total", "4"), "4")
        names = await deferToThread(
            browser.run,
            "return Array.from(document.querySelectorAll('tr[data-queue]'),"
            " r => r.dataset.queue)",
        )
        self.assertEqual(names, ["orders"])
        await deferToThread(browser.run, "window.notReloaded = true")
        await api.post("orders", {"body": "new"}, {"body": "newer"}, project="acme")
        await deferToThread(browser.text, row + " td.free", "4")
        self.assertTrue(await deferToThread(browser.run, "return window.notReloaded"))
        posted = await deferToThread(browser.text, row + " td.posted", "/min")
        self.assertIn("6/min", posted)

    async def test_hostileBodyIsText(self) -> None:
        """
        A message body and tags holding markup are shown as text on the
        queue page: the script in them never runs and adds no element.
        """
        node, api = await self.startNode()
        hostile = (
            "<script>window.pwned = 1</script><img src=x onerror='window.pwned=2'>"
        )
        await api.post("inbox", {"body": hostile, "tags": ["<b>bold"]}, project="acme")
        browser = await self.browser()
        await deferToThread(browser.open, node.url, "acme", "#/queue/inbox")
        body = await deferToThread(browser.text, "table.messages td.body", "<script>")
        self.assertIn("<script>window.pwned = 1</script>", body)
        tag = await deferToThread(browser.text, "table.messages .tag", "<b>")
        self.assertEqual(tag, "<b>bold")
        found = await deferToThread(
            browser.run,
            "return [window.pwned === undefined,"
            " document.querySelectorAll('#page script, #page img, #page b').length]",
        )
        self.assertEqual(found, [True, 0])
