"""
A node's resident memory: with many open idle client connections, and
with many stored messages on each store (docs/storage.rst).

    python bench/memory.py connections --connections 10000
    python bench/memory.py messages --messages 1000000 --stores sqlite,redis,mongodb

C{connections} starts a SQLite node, measures its RSS (VmRSS) after a few
requests, opens C{--connections} TCP connections to it that send nothing,
measures again once they are all accepted, and checks the node still
answers.  The script raises its own open-file limit to the hard limit; the
node inherits it.

C{messages} starts, for each store, its backing server and a node, measures
the node's RSS after a few requests on an empty queue, fills one queue with
C{--messages} messages through the store API (bench/depth.py's filler, in
batches of 1,000), makes a few requests on the full queue (stats, a
listing from its middle, a claim) and measures again: the node's RSS, the
backing server's RSS and, for SQLite, the database file's size.

Each prints C{MARCONI-MEMORY <json>}.
"""

import argparse
import asyncio
import glob
import json
import os
import resource
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from depth import (  # noqa: E402
    client,
    expect,
    fillInProcess,
    serverKind,
    startNode,
    storageFor,
)
from longpoll import rss  # noqa: E402
from run import Servers  # noqa: E402


async def warm(url: str, queue: str, depth: int) -> None:
    c = client(url)
    base = f"/v2/queues/{queue}".encode()
    for _ in range(20):
        await expect(c, c.build(b"GET", base + b"/stats"), 200)
        listing = base + b"/messages?echo=true&limit=10&marker=%d" % (depth // 2)
        await expect(c, c.build(b"GET", listing), 200)
    if depth:
        claim = c.build(b"POST", base + b"/claims?limit=10", b'{"ttl":60}')
        await expect(c, claim, 201)
    c.close()
    await asyncio.sleep(1)


async def connections(url: str, pid: int, count: int, settle: float) -> dict:
    await warm(url, "idle", 0)
    before = rss(pid)
    host, port = url.rsplit("//", 1)[1].split(":")
    opened = []
    started = time.monotonic()
    for index in range(count):
        opened.append(await asyncio.open_connection(host, int(port)))
        if index % 50 == 49:
            # Past the listen backlog the kernel drops connections.
            await asyncio.sleep(0.05)
    await asyncio.sleep(settle)
    during = rss(pid)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    await warm(url, "idle", 0)  # it still answers
    for _reader, writer in opened:
        writer.close()
    await asyncio.sleep(2)
    return {
        "connections": count,
        "secondsToOpen": round(time.monotonic() - started - settle, 1),
        "nodeOpenFiles": fds,
        "rssBeforeKiB": before,
        "rssWithConnectionsKiB": during,
        "perConnectionBytes": round((during - before) * 1024 / count),
        "rssAfterCloseKiB": rss(pid),
    }


def storeMemory(store: str, count: int) -> dict:
    workdir = tempfile.mkdtemp(prefix=f"marconi-memory-{store}-")
    servers = Servers(workdir)
    try:
        uri, serverPids = storageFor(servers, store)
        url, pid = startNode(servers, uri)
        asyncio.run(warm(url, "empty", 0))
        result = {
            "server": serverKind(store),
            "nodeRssEmptyKiB": rss(pid),
            "serverRssEmptyKiB": sum(rss(p) for p in serverPids),
        }
        result["fillSeconds"] = round(fillInProcess(uri, "full", count), 1)
        asyncio.run(warm(url, "full", count))
        result["nodeRssFullKiB"] = rss(pid)
        result["serverRssFullKiB"] = sum(rss(p) for p in serverPids)
        if store == "sqlite":
            files = glob.glob(uri.split(":", 1)[1] + "*")
            result["fileBytes"] = sum(os.path.getsize(f) for f in files)
        return result
    finally:
        servers.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("connections")
    c.add_argument("--connections", type=int, default=10_000)
    c.add_argument("--settle", type=float, default=5.0)
    m = sub.add_parser("messages")
    m.add_argument("--messages", type=int, default=1_000_000)
    m.add_argument("--stores", default="sqlite,redis,mongodb")
    options = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    report: dict = {"what": options.what, "loadBefore": os.getloadavg()}
    if options.what == "connections":
        if options.connections + 100 > hard:
            raise SystemExit(f"the open-file hard limit ({hard}) is too low")
        workdir = tempfile.mkdtemp(prefix="marconi-memory-")
        servers = Servers(workdir)
        try:
            uri, _ = storageFor(servers, "sqlite")
            url, pid = startNode(servers, uri)
            report.update(
                asyncio.run(connections(url, pid, options.connections, options.settle))
            )
        finally:
            servers.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    else:
        report["messages"] = options.messages
        for store in options.stores.split(","):
            report[store] = storeMemory(store, options.messages)
            print(f"{store}: {json.dumps(report[store])}", flush=True)
    report["loadAfter"] = os.getloadavg()
    print("MARCONI-MEMORY " + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
