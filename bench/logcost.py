"""
What one access log line costs the reactor thread: CPU time (user and
system) per access event, from the site's emit to the bytes in the file,
for twistd's own text observer (what a node without a logging driver
used to log to) and for Marconi's L{StreamObserver}, writing each line at
once and keeping lines for a flush every 100 events (a node answering
1000 requests a second with C{flush_interval = 0.1})::

    PYTHONPATH=. python bench/logcost.py
    PYTHONPATH=. python bench/logcost.py --events 50000 --rounds 7

Each destination is a L{LogFile} (C{twistd --logfile}) and a plain file
(standard output of C{twistd -n}, redirected); the rounds alternate and
the median per event is printed.
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time

from twisted.internet.task import Clock
from twisted.logger import Logger, LogPublisher, textFileLogObserver
from twisted.python.logfile import LogFile
from twisted.web.http_headers import Headers

from marconi.api import http
from marconi.observability import logs

FIELDS = {
    "request_id": "req-" + "ab" * 16,
    "project": "demo",
    "method": "POST",
    "path": "/v2/queues/jobs/messages",
    "status": 201,
    "duration": 0.0012,
    "size": 160,
    "route": "postMessages",
}
KINDS = ("twistd", "at once", "buffered")
DESTINATIONS = ("logfile", "stdout")


def observerFor(kind: str, stream, clock: Clock):
    if kind == "twistd":
        return textFileLogObserver(stream)
    observer = logs.StreamObserver(stream)
    if kind == "buffered":
        observer.startBuffering(clock, 0.1)
    return observer


def perEvent(kind: str, destination: str, directory: str, events: int) -> float:
    path = os.path.join(directory, f"{destination}.log")
    if destination == "logfile":
        stream = LogFile.fromFullPath(path, rotateLength=10**12)
    else:
        stream = open(path, "w")
    clock = Clock()
    logger = Logger(
        namespace=http.accessLog.namespace,
        observer=LogPublisher(observerFor(kind, stream, clock)),
    )
    site = http.MarconiSite(None, 1, reactor=clock)
    request = type(
        "Answered",
        (),
        {
            "route": "postMessages",
            "code": 201,
            "started": 0.0,
            "forwarded": False,
            "requestId": FIELDS["request_id"],
            "project": "demo",
            "method": b"POST",
            "path": FIELDS["path"].encode(),
            "sentLength": 160,
            "responseHeaders": Headers(),
        },
    )()
    previous, http.accessLog = http.accessLog, logger
    try:
        started = time.process_time()
        for i in range(events):
            site.log(request)
            if i % 100 == 99:
                clock.advance(0.1)
        spent = time.process_time() - started
    finally:
        http.accessLog = previous
        stream.close()
        os.remove(path)
    return spent / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="marconi-logcost-")
    results: dict = {}
    try:
        for _ in range(options.rounds):
            for kind in KINDS:
                for destination in DESTINATIONS:
                    results.setdefault((kind, destination), []).append(
                        perEvent(kind, destination, directory, options.events)
                    )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    load = os.getloadavg()
    print(f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'observer':10} {'destination':12} {'us/event':>9} {'least':>7}")
    for (kind, destination), spent in results.items():
        print(
            f"{kind:10} {destination:12} "
            f"{statistics.median(spent):9.2f} {min(spent):7.2f}"
        )


if __name__ == "__main__":
    main()
