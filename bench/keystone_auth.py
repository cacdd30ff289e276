"""
Requests per second with Keystone auth (warm token cache) against noauth.

Starts the tests' Keystone (tests/keystoneserver.py: built once into
~/.cache/marconi-tests), takes a project-scoped token of its user
C{alice}, and runs bench/run.py twice over a SQLite node: once with
C{noauth}, once with C{--auth keystone}, every request carrying the token
(its first request fills the cache; the warm-up hides it).  Extra
arguments go to bench/run.py, e.g.::

    python bench/keystone_auth.py --scenarios post1,list10,getbyid --repeat 3

The goal: keystone within 10% of noauth.
"""

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests import keystoneserver  # noqa: E402


def main(argv: list) -> int:
    keystone = keystoneserver.shared()
    token, project = keystone.token("alice")
    directory = tempfile.mkdtemp(prefix="marconi-bench-keystone-")
    config = os.path.join(directory, "marconi.ini")
    with open(config, "w") as f:
        f.write("[auth:keystone]\n")
        for key, value in keystone.settings(cache_ttl="300").items():
            f.write(f"{key} = {value}\n")
    run = [sys.executable, os.path.join(HERE, "run.py"), "--target", "sqlite"]
    env = dict(os.environ, MARCONI_BENCH_PROJECT=project)
    print("== noauth", flush=True)
    status = subprocess.call(run + argv, env=env)
    print("== keystone (cached tokens)", flush=True)
    env["MARCONI_BENCH_TOKEN"] = token
    nodeArgs = f"--auth keystone --config {config}"
    status |= subprocess.call(
        run + ["--no-baseline", "--node-args", nodeArgs] + argv, env=env
    )
    keystone.close()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
