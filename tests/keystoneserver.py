"""
A real OpenStack Keystone for the auth tests: Keystone from PyPI in a
virtualenv of its own, with SQLite and fernet tokens, on a free loopback
port.

The virtualenv (Keystone, and the C{openstack} CLI with the Zaqar plugin)
and a bootstrapped database with the tests' projects and users are built
once into a cache directory outside the repository,
C{$MARCONI_TEST_CACHE} or C{~/.cache/marconi-tests}, keyed by the Keystone
version, and reused by later runs; each run copies the database and keys
into a temporary directory and starts a server there.  Building takes one
to two minutes (mostly C{pip install}); a run with the cache ready starts
Keystone in a few seconds.

Tests skip, with the reason, only when the environment cannot be built
(no network to PyPI, for example).
"""

import atexit
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Optional

from tests.redisserver import freePort

VERSION = "30.0.0"
PACKAGES = [f"keystone=={VERSION}", "python-openstackclient", "python-zaqarclient"]
CACHE = os.path.join(
    os.environ.get("MARCONI_TEST_CACHE")
    or os.path.join(os.path.expanduser("~"), ".cache", "marconi-tests"),
    f"keystone-{VERSION}",
)
VENV = os.path.join(CACHE, "venv")
TEMPLATE = os.path.join(CACHE, "template")
ADMIN_PASSWORD = "admin-secret"
PASSWORD = "secret-pw"
# The tests' people: name -> (project, role).
USERS = {
    "alice": ("tenant1", "member"),
    "bob": ("tenant2", "member"),
    "queue": ("service", "service"),
    "oper": ("tenant1", "admin"),
}

SERVE = """\
import sys, warnings
warnings.filterwarnings("ignore")
port = int(sys.argv[1])
sys.argv = sys.argv[:1]  # oslo.config parses sys.argv
from keystone.wsgi.api import application
from werkzeug.serving import run_simple
run_simple("127.0.0.1", port, application, threaded=True, use_reloader=False)
"""

CONF = """\
[DEFAULT]
log_file = {dir}/keystone-{port}.log
[database]
connection = sqlite:///{dir}/keystone.db
[token]
provider = fernet
expiration = {expiration}
[fernet_tokens]
key_repository = {dir}/fernet-keys
[fernet_receipts]
key_repository = {dir}/fernet-keys
[credential]
key_repository = {dir}/credential-keys
[identity]
password_hash_rounds = 4
[cache]
enabled = true
backend = dogpile.cache.memory
"""


class Unavailable(Exception):
    """
    Keystone cannot run here; the message says why.
    """


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["PYTHONWARNINGS"] = "ignore"
    env.pop("PYTHONPATH", None)
    return env


def _run(args: list, log: str, timeout: float = 900) -> None:
    with open(log, "ab") as out:
        done = subprocess.run(
            args, stdout=out, stderr=subprocess.STDOUT, env=_env(), timeout=timeout
        )
    if done.returncode:
        with open(log, "rb") as f:
            tail = f.read()[-2000:].decode("utf-8", "replace")
        raise Unavailable(f"{' '.join(args[:3])} failed: {tail}")


def call(
    url: str, method: str, path: str, body: Any = None, token: Optional[str] = None
) -> tuple:
    """
    One blocking Keystone API call: (status, headers, JSON body or None).
    """
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Auth-Token"] = token
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            raw = r.read()
            return r.status, r.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, e.headers, json.loads(raw) if raw.strip() else None


def passwordToken(url: str, user: str, password: str, project: str) -> tuple:
    """
    A project-scoped token: (token, token document).
    """
    auth = {
        "identity": {
            "methods": ["password"],
            "password": {
                "user": {
                    "name": user,
                    "domain": {"id": "default"},
                    "password": password,
                }
            },
        },
        "scope": {"project": {"name": project, "domain": {"id": "default"}}},
    }
    status, headers, body = call(url, "POST", "/auth/tokens", {"auth": auth})
    if status != 201:
        raise Unavailable(f"password auth for {user} failed: {status} {body}")
    return headers["X-Subject-Token"], body["token"]


def _buildVenv() -> None:
    if os.path.exists(os.path.join(VENV, ".complete")):
        return
    shutil.rmtree(VENV, ignore_errors=True)
    log = os.path.join(CACHE, "build.log")
    _run([sys.executable, "-m", "venv", VENV], log)
    _run([os.path.join(VENV, "bin", "pip"), "install", "-q", *PACKAGES], log)
    open(os.path.join(VENV, ".complete"), "w").close()


def _buildTemplate() -> None:
    if os.path.exists(os.path.join(TEMPLATE, "ids.json")):
        return
    shutil.rmtree(TEMPLATE, ignore_errors=True)
    os.makedirs(TEMPLATE)
    port = freePort()
    server = KeystoneServer(TEMPLATE, port)
    conf = server.writeConfig()
    manage = [os.path.join(VENV, "bin", "keystone-manage"), "--config-file", conf]
    log = os.path.join(TEMPLATE, "setup.log")
    owner = ["--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid())]
    _run(manage + ["db_sync"], log)
    _run(manage + ["fernet_setup", *owner], log)
    _run(manage + ["credential_setup", *owner], log)
    for keys in ("fernet-keys", "credential-keys"):
        os.chmod(os.path.join(TEMPLATE, keys), 0o700)
    _run(
        manage
        + [
            "bootstrap",
            "--bootstrap-username=admin",
            f"--bootstrap-password={ADMIN_PASSWORD}",
            "--bootstrap-project-name=admin",
            "--bootstrap-role-name=admin",
            "--bootstrap-service-name=keystone",
            "--bootstrap-region-id=RegionOne",
            f"--bootstrap-public-url={server.url}",
        ],
        log,
    )
    server.start()
    try:
        admin, _ = passwordToken(server.url, "admin", ADMIN_PASSWORD, "admin")
        _, _, body = call(server.url, "GET", "/roles", token=admin)
        roles = {r["name"]: r["id"] for r in body["roles"]}
        ids: dict = {"projects": {}, "users": {}}
        for project in {p for p, _ in USERS.values()}:
            _, _, body = call(
                server.url,
                "POST",
                "/projects",
                {"project": {"name": project, "domain_id": "default"}},
                admin,
            )
            ids["projects"][project] = body["project"]["id"]
        for name, (project, role) in USERS.items():
            user = {"name": name, "domain_id": "default", "password": PASSWORD}
            _, _, body = call(server.url, "POST", "/users", {"user": user}, admin)
            ids["users"][name] = userId = body["user"]["id"]
            projectId = ids["projects"][project]
            path = f"/projects/{projectId}/users/{userId}/roles/{roles[role]}"
            status, _, _ = call(server.url, "PUT", path, token=admin)
            assert status == 204, status
    finally:
        server.stop()
    with open(os.path.join(TEMPLATE, "ids.json"), "w") as f:
        json.dump(ids, f)


def prepare() -> None:
    """
    Build the cached virtualenv and template once (several test processes
    may ask at the same time: one builds, the others wait).

    @raise Unavailable: it cannot be built here.
    """
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _buildVenv()
            _buildTemplate()
        except (OSError, subprocess.SubprocessError) as e:
            raise Unavailable(f"cannot build Keystone {VERSION}: {e}") from None


def _dieWithParent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class KeystoneServer:
    """
    One Keystone server process over the database and keys in C{directory}.

    @param expiration: the lifetime of the tokens it issues, in seconds.
    """

    def __init__(self, directory: str, port: int, expiration: int = 3600) -> None:
        self.directory = directory
        self.port = port
        self.expiration = expiration
        self.url = f"http://127.0.0.1:{port}/v3"
        self.process: Optional[subprocess.Popen] = None

    def writeConfig(self) -> str:
        etc = os.path.join(self.directory, f"etc-{self.port}")
        os.makedirs(etc, exist_ok=True)
        with open(os.path.join(etc, "keystone.conf"), "w") as f:
            f.write(
                CONF.format(
                    dir=self.directory, port=self.port, expiration=self.expiration
                )
            )
        with open(os.path.join(self.directory, "serve.py"), "w") as f:
            f.write(SERVE)
        return os.path.join(etc, "keystone.conf")

    def start(self, timeout: float = 90.0) -> "KeystoneServer":
        conf = self.writeConfig()
        env = _env()
        env["OS_KEYSTONE_CONFIG_DIR"] = os.path.dirname(conf)
        out = open(os.path.join(self.directory, f"server-{self.port}.out"), "wb")
        self.process = subprocess.Popen(
            [
                os.path.join(VENV, "bin", "python"),
                os.path.join(self.directory, "serve.py"),
                str(self.port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_dieWithParent,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Unavailable(f"Keystone exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(self.url, timeout=2).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise Unavailable(f"Keystone did not answer within {timeout} seconds")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Deployment:
    """
    A running Keystone with the tests' projects and users, in a copy of the
    cached template.
    """

    def __init__(self) -> None:
        prepare()
        self.directory = tempfile.mkdtemp(prefix="marconi-keystone-")
        for name in ("keystone.db", "fernet-keys", "credential-keys", "ids.json"):
            source = os.path.join(TEMPLATE, name)
            target = os.path.join(self.directory, name)
            if os.path.isdir(source):
                shutil.copytree(source, target)
            else:
                shutil.copy(source, target)
        with open(os.path.join(self.directory, "ids.json")) as f:
            ids = json.load(f)
        self.projects: dict = ids["projects"]
        self.users: dict = ids["users"]
        self.server = KeystoneServer(self.directory, freePort()).start()
        self.url = self.server.url
        atexit.register(self.close)

    def token(self, user: str) -> tuple:
        """
        A token of C{user} scoped to its project: (token, project id).
        """
        project = USERS[user][0]
        token, _ = passwordToken(self.url, user, PASSWORD, project)
        return token, self.projects[project]

    def adminToken(self) -> str:
        return passwordToken(self.url, "admin", ADMIN_PASSWORD, "admin")[0]

    def revoke(self, token: str) -> None:
        headers = {"X-Auth-Token": self.adminToken(), "X-Subject-Token": token}
        request = urllib.request.Request(
            self.url + "/auth/tokens", headers=headers, method="DELETE"
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 204, r.status

    def registerMessaging(self, url: str) -> None:
        """
        Put a C{messaging} service with its public endpoint at C{url} in
        the catalog (replacing any earlier one), as a deployment would.
        """
        admin = self.adminToken()
        _, _, body = call(self.url, "GET", "/services?type=messaging", token=admin)
        for old in body["services"]:
            call(self.url, "DELETE", f"/services/{old['id']}", token=admin)
        service = {"type": "messaging", "name": "marconi", "enabled": True}
        _, _, body = call(self.url, "POST", "/services", {"service": service}, admin)
        endpoint = {
            "service_id": body["service"]["id"],
            "interface": "public",
            "region_id": "RegionOne",
            "url": url,
        }
        status, _, _ = call(
            self.url, "POST", "/endpoints", {"endpoint": endpoint}, admin
        )
        assert status == 201, status

    def shortLived(self, expiration: int) -> KeystoneServer:
        """
        A second server over the same database and keys, whose tokens live
        C{expiration} seconds (the main server validates them).
        """
        return KeystoneServer(self.directory, freePort(), expiration).start()

    def settings(self, **overrides: str) -> dict:
        """
        The C{[auth:keystone]} section for a node using this Keystone as
        the C{queue} service user.
        """
        settings = {
            "url": self.url,
            "username": "queue",
            "password": PASSWORD,
            "project_name": "service",
        }
        settings.update(overrides)
        return settings

    def bin(self, name: str) -> str:
        return os.path.join(VENV, "bin", name)

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


_shared: Optional[Deployment] = None
_failure: Optional[str] = None


def shared() -> Deployment:
    """
    The Keystone of this test process, started on first use.

    @raise Unavailable: with the reason it cannot run.
    """
    global _shared, _failure
    if _failure is not None:
        raise Unavailable(_failure)
    if _shared is None:
        try:
            _shared = Deployment()
        except Unavailable as e:
            _failure = str(e)
            raise
    return _shared
