"""
C{twistd marconi}: options, the configuration file, drivers found as
plugins, and the service tree.
"""

import os

from twisted.application.service import IService, IServiceMaker, Service
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

import marconi.plugins
from marconi import kernel, tap
from marconi.config import DEFAULT_LISTEN, DEFAULT_STORAGE
from marconi.core.interfaces import (
    IAuthDriver,
    IAuthDriverPlugin,
    IStorageDriverPlugin,
)


class OptionsTests(SynchronousTestCase):
    def parse(self, *args: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(args))
        return options

    def test_defaults(self) -> None:
        """
        With no options a node listens on 127.0.0.1:8888 and stores into
        marconi.sqlite3 in the working directory.
        """
        loaded = self.parse().loaded
        self.assertEqual(loaded.listen, (DEFAULT_LISTEN,))
        self.assertEqual(loaded.listen, ("tcp:8888:interface=127.0.0.1",))
        self.assertEqual(loaded.storage, DEFAULT_STORAGE)
        self.assertEqual(loaded.auth, "noauth")

    def test_listenRepeatable(self) -> None:
        """
        --listen may be given several times.
        """
        loaded = self.parse("--listen", "tcp:0", "--listen", "unix:/tmp/m.sock").loaded
        self.assertEqual(loaded.listen, ("tcp:0", "unix:/tmp/m.sock"))

    def test_badListen(self) -> None:
        """
        An endpoint description Twisted cannot parse is a usage error.
        """
        e = self.assertRaises(UsageError, self.parse, "--listen", "bogus:1")
        self.assertIn("bogus:1", str(e))

    def test_unknownStorage(self) -> None:
        """
        An unknown storage scheme is a usage error naming the known ones.
        """
        e = self.assertRaises(UsageError, self.parse, "--storage", "ftp://x")
        self.assertIn("ftp", str(e))
        self.assertIn("sqlite", str(e))

    def test_badStorageURI(self) -> None:
        """
        A storage URI its driver refuses is a usage error with the reason.
        """
        e = self.assertRaises(UsageError, self.parse, "--storage", "sqlite:")
        self.assertIn("path", str(e))

    def test_configFile(self) -> None:
        """
        The INI file sets listen, storage, limits and the purge interval;
        options on the command line win over it.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                "[marconi]\n"
                "listen = tcp:9000\n    unix:/tmp/x.sock\n"
                "storage = sqlite::memory:\n"
                "purge_interval = 5\n"
                "[limits]\nmax_messages_per_page = 50\n"
            )
        loaded = self.parse("--config", path).loaded
        self.assertEqual(loaded.listen, ("tcp:9000", "unix:/tmp/x.sock"))
        self.assertEqual(loaded.storage, "sqlite::memory:")
        self.assertEqual(loaded.purgeInterval, 5.0)
        self.assertEqual(loaded.limits.maxMessagesPerPage, 50)
        loaded = self.parse(
            "--config", path, "--listen", "tcp:1", "--storage", "sqlite:x.db"
        ).loaded
        self.assertEqual(loaded.listen, ("tcp:1",))
        self.assertEqual(loaded.storage, "sqlite:x.db")

    def test_authSection(self) -> None:
        """
        The auth driver's settings come from C{[auth:NAME]} or from
        C{[NAME]}; a file with both is refused.
        """
        for section in ("auth:keystone", "keystone"):
            path = self.mktemp()
            with open(path, "w") as f:
                f.write(f"[marconi]\nauth = keystone\n[{section}]\nurl = http://k\n")
            loaded = self.parse("--config", path).loaded
            self.assertEqual(dict(loaded.authSettings), {"url": "http://k"})
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[auth:keystone]\nurl = a\n[keystone]\nurl = b\n")
        with self.assertRaises(UsageError) as caught:
            self.parse("--config", path, "--auth", "keystone")
        self.assertIn("keep one", str(caught.exception))

    def test_acronymLimits(self) -> None:
        """
        Limits whose names hold acronyms (TTL, JSON) are set from their
        snake_case names in the INI file.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                "[limits]\nmin_claim_ttl = 1\nmax_message_ttl = 600\n"
                "default_claim_ttl = 30\nmax_json_depth = 8\n"
            )
        limits = self.parse("--config", path).loaded.limits
        self.assertEqual(
            (
                limits.minClaimTTL,
                limits.maxMessageTTL,
                limits.defaultClaimTTL,
                limits.maxJSONDepth,
            ),
            (1, 600, 30, 8),
        )

    def test_badConfigFile(self) -> None:
        """
        A missing file, bad syntax, an unknown setting or a bad value is a
        one-line usage error.
        """
        missing = os.path.join(self.mktemp(), "nope.ini")
        for content in (
            None,
            "not ini",
            "[marconi]\ncolour = red\n",
            "[limits]\nmax_foo = 1\n",
            "[limits]\nmax_messages_per_page = x\n",
            "[marconi]\npurge_interval = -1\n",
        ):
            path = missing
            if content is not None:
                path = self.mktemp()
                with open(path, "w") as f:
                    f.write(content)
            e = self.assertRaises(UsageError, self.parse, "--config", path)
            self.assertNotIn("\n", str(e))

    def test_help(self) -> None:
        """
        The help text explains every option.
        """
        text = str(tap.Options())
        for word in ("--listen", "--storage", "--config", "sqlite:PATH"):
            self.assertIn(word, text)


class PluginTests(SynchronousTestCase):
    def test_serviceMaker(self) -> None:
        """
        twistd finds the C{marconi} service maker.
        """
        makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
        self.assertIn("marconi", makers)
        self.assertIs(makers["marconi"].options, tap.Options)

    def test_drivers(self) -> None:
        """
        The bundled drivers are found as plugins and provide their
        interfaces; noauth makes a provider of L{IAuthDriver}.
        """
        storage = list(getPlugins(IStorageDriverPlugin, marconi.plugins))
        self.assertIn("sqlite", [p.name for p in storage])
        for plugin in storage:
            self.assertTrue(verifyObject(IStorageDriverPlugin, plugin))
        auth = {p.name: p for p in getPlugins(IAuthDriverPlugin, marconi.plugins)}
        self.assertTrue(verifyObject(IAuthDriverPlugin, auth["noauth"]))
        self.assertTrue(verifyObject(IAuthDriver, auth["noauth"].makeAuth({}, None)))

    def test_unknownAuth(self) -> None:
        """
        An unknown auth driver is refused naming the known ones.
        """
        e = self.assertRaises(ValueError, kernel.authDriverFor, "magic")
        self.assertIn("noauth", str(e))


class ServiceTests(SynchronousTestCase):
    def test_serviceTree(self) -> None:
        """
        The node is storage first (under the audit river's service), then
        the purge job, then one listener per --listen.
        """
        from twisted.internet import reactor

        options = tap.Options()
        options.parseOptions(
            ["--storage", "sqlite::memory:", "--listen", "tcp:0", "--listen", "tcp:0"]
        )
        node = tap.makeService(options, reactor)
        self.assertTrue(IService.providedBy(node))
        # The store is the child of the audit river's service, which waits
        # for the river's writes before it stops the store.
        self.assertEqual([type(s).__name__ for s in list(node)[0]], ["SQLiteStore"])
        self.assertEqual(type(list(node)[0].river).__name__, "AuditRiver")
        kinds = [type(s).__name__ for s in node]
        self.assertEqual(
            kinds,
            [
                "RiverService",
                "PurgeService",
                "StreamServerEndpointService",
                "StreamServerEndpointService",
            ],
        )


class InstalledCopyTests(SynchronousTestCase):
    def test_pluginsFromInstalledCopy(self) -> None:
        """
        Installed by pip (not run from the source tree), Marconi's twistd
        plugin and its bundled drivers are found.
        """
        import subprocess
        import sys

        from tests.nodeprocess import ROOT

        target = os.path.abspath(self.mktemp())
        os.makedirs(target)
        build = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                target,
                ROOT,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if build.returncode != 0:
            self.skipTest(f"pip could not build the package: {build.stderr[-300:]}")
        code = (
            "import marconi, marconi.plugins\n"
            "from twisted.plugin import getPlugins\n"
            "from twisted.application.service import IServiceMaker\n"
            "from marconi.core.interfaces import IStorageDriverPlugin\n"
            "print(marconi.__file__)\n"
            "print(sorted(p.tapname for p in getPlugins(IServiceMaker)"
            " if p.tapname == 'marconi'))\n"
            "print(sorted(p.name for p in getPlugins(IStorageDriverPlugin,"
            " marconi.plugins)))\n"
        )
        env = dict(os.environ, PYTHONPATH=target)
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=target,
        )
        lines = result.stdout.splitlines()
        self.assertTrue(lines[0].startswith(target), result.stdout + result.stderr)
        self.assertEqual(lines[1], "['marconi']")
        self.assertIn("'sqlite'", lines[2])


class EditableInstallTests(SynchronousTestCase):
    def test_pluginsFromEditableInstall(self) -> None:
        """
        After C{pip install -e .} (the README's quick start), twistd finds
        the C{marconi} plugin from any working directory.
        """
        import subprocess
        import sys
        import sysconfig

        from tests.nodeprocess import ROOT

        venv = os.path.abspath(self.mktemp())
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
        python = os.path.join(venv, "bin", "python")
        # Twisted and the other dependencies come from the environment the
        # tests run in (a path in a .pth file; that directory's own .pth
        # files, an installed Marconi's among them, are not read).
        site = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        with open(os.path.join(site, "dependencies.pth"), "w") as f:
            f.write(sysconfig.get_paths()["purelib"] + "\n")
        build = subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", ROOT],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=venv,
        )
        if build.returncode != 0:
            self.skipTest(f"pip could not build the package: {build.stderr[-300:]}")
        code = (
            "from twisted.plugin import getPlugins\n"
            "from twisted.application.service import IServiceMaker\n"
            "print([p.tapname for p in getPlugins(IServiceMaker)"
            " if p.tapname == 'marconi'])\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        result = subprocess.run(
            [python, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=venv,
        )
        self.assertEqual(result.stdout.strip(), "['marconi']", result.stderr)


class StopOrderTests(TestCase):
    async def test_storageStopsLast(self) -> None:
        """
        The node's storage stops only once its other services have, so
        that what one of them writes while it stops, even a turn of the
        reactor later, is stored.
        """
        from twisted.internet import reactor

        options = tap.Options()
        options.parseOptions(
            [
                "--storage",
                "sqlite:" + self.mktemp(),
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ]
        )
        node = tap.makeService(options, reactor)
        self.assertIsInstance(node, kernel.NodeService)
        store = list(list(node)[0])[0]
        written: list = []

        class Writer(Service):
            async def _stop(self) -> None:
                await deferLater(reactor, 0, lambda: None)
                try:
                    await store.createQueue("p", "q", {}, 1.0)
                except Exception as e:
                    written.append(e)
                else:
                    written.append("stored")

            def stopService(self) -> Deferred:
                super().stopService()
                return Deferred.fromCoroutine(self._stop())

        Writer().setServiceParent(node)
        node.startService()
        await node.stopService()
        self.assertEqual(written, ["stored"])
        self.assertFalse(store.running)
