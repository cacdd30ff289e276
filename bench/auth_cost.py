"""
What authentication adds to each request: the auth driver's own cost per
call, Keystone with a warm token cache against noauth.

Request rates (bench/keystone_auth.py) vary by ±20% between repeats on this
machine, more than the difference being measured; this times the one thing
the two configurations do differently, the driver's C{authenticate}, in
process.  Starts the tests' Keystone (tests/keystoneserver.py), validates
one token for real to fill the cache, then times cached calls::

    python bench/auth_cost.py [--calls N]
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402

from marconi.auth.keystone import KeystoneAuth, parseSettings  # noqa: E402
from marconi.auth.noauth import NoAuth  # noqa: E402
from tests import keystoneserver  # noqa: E402


def timeCalls(driver, headers: dict, calls: int) -> float:
    """
    The best of five runs of C{calls} calls, in microseconds per call.
    """
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            driver.authenticate(headers, None).addErrback(lambda f: None)
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


async def measure(calls: int) -> None:
    keystone = keystoneserver.shared()
    token, project = keystone.token("alice")
    auth = KeystoneAuth(parseSettings(keystone.settings(cache_ttl="300")), reactor)
    headers = {b"x-auth-token": token.encode(), b"x-project-id": project.encode()}
    await auth.authenticate(headers, None)  # the one real validation
    try:
        for name, driver in (("noauth", NoAuth()), ("keystone, cached", auth)):
            cost = timeCalls(driver, headers, calls)
            print(f"{name:18} {cost:6.2f} us per request")
    finally:
        await auth.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()

    def run() -> None:
        d = Deferred.fromCoroutine(measure(args.calls))
        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()


if __name__ == "__main__":
    main()
