"""
The sub-commands of C{marconi} (but C{consume}, in its own module): each
takes the L{Session} and the parsed arguments and returns the exit status.
The parser names each one with C{set_defaults(func=...)}.
"""

import argparse
import json
from typing import Any, Iterable

from marconi.client.cli.output import Progress, dumps, plural
from marconi.client.cli.reading import readMessages
from marconi.client.cli.session import Session
from marconi.client.cli.status import EXIT_ERROR, EXIT_OK, UsageError

# Queues.


def queueList(session: Session, args: argparse.Namespace) -> int:
    client, out = session.client, session.out
    count = None
    if args.count:
        count = client.listQueues(limit=1, withCount=True).count
    queues = client.queues(detailed=args.detailed)
    if out.asJSON:
        for q in queues:
            doc = {"name": q.name, "href": q.href}
            if args.detailed:
                doc["metadata"] = q.metadata
            out.line(doc)
        return EXIT_OK
    if args.detailed:
        out.table(("NAME", "METADATA"), ([q.name, q.metadata] for q in queues))
    else:
        out.table(("NAME",), ([q.name] for q in queues))
    if count is not None:
        out.text(plural(count, "queue"))
    return EXIT_OK


def queueCreate(session: Session, args: argparse.Namespace) -> int:
    metadata = None
    if args.metadata is not None:
        try:
            metadata = json.loads(args.metadata)
        except ValueError:
            raise UsageError("METADATA is not JSON") from None
        if not isinstance(metadata, dict):
            raise UsageError("METADATA must be a JSON object")
    created = session.client.createQueue(args.queue, metadata)
    session.out.result(
        {"name": args.queue, "created": created},
        f"Created queue {args.queue}."
        if created
        else f"Queue {args.queue} already exists.",
    )
    return EXIT_OK


def queueDelete(session: Session, args: argparse.Namespace) -> int:
    session.client.deleteQueue(args.queue)
    session.out.result(
        {"name": args.queue, "deleted": True}, f"Deleted queue {args.queue}."
    )
    return EXIT_OK


def queueStats(session: Session, args: argparse.Namespace) -> int:
    stats = session.client.queueStats(args.queue)
    if session.out.asJSON:
        session.out.document(stats.toJSON())
        return EXIT_OK
    rows: list = [
        ["free", stats.free],
        ["claimed", stats.claimed],
        ["delayed", stats.delayed],
        ["total", stats.total],
    ]
    for name, ref in (("oldest", stats.oldest), ("newest", stats.newest)):
        if ref is not None:
            rows.append([name, f"{ref.id} (age {ref.age}s, {ref.created})"])
    session.out.table(("MESSAGES", "VALUE"), rows)
    return EXIT_OK


def queueMeta(session: Session, args: argparse.Namespace) -> int:
    updates = {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set wants KEY=VALUE, not {item!r}")
        try:
            updates[key] = json.loads(raw)
        except ValueError:
            updates[key] = raw
    if updates or args.unset:
        metadata = session.client.updateQueueMetadata(
            args.queue, set=updates, remove=args.unset
        )
    else:
        metadata = session.client.queueMetadata(args.queue)
    if session.out.asJSON:
        session.out.document(metadata)
    else:
        session.out.table(
            ("KEY", "VALUE"), ([k, metadata[k]] for k in sorted(metadata))
        )
    return EXIT_OK


# Messages.


def post(session: Session, args: argparse.Namespace) -> int:
    out = session.out
    messages, origin = readMessages(args, session.stdin)
    progress = Progress(
        out.err,
        f"posting to {args.queue}",
        len(messages) if origin != "argument" and len(messages) > 1 else None,
    )
    ids: list[str] = []
    try:
        for batch in session.client.postBatches(
            args.queue, messages, batchSize=args.batch_size, maxBytes=args.max_bytes
        ):
            ids += batch
            progress.advance(len(batch))
    finally:
        progress.finish()
        if len(ids) < len(messages) and ids:
            out.note(f"marconi: posted {len(ids)} of {len(messages)} messages")
    if out.asJSON:
        out.document({"queue": args.queue, "ids": ids})
    else:
        for i in ids:
            out.text(i)
    return EXIT_OK


def listMessages(session: Session, args: argparse.Namespace) -> int:
    messages = session.client.messages(
        args.queue,
        echo=not args.no_echo,
        includeClaimed=args.include_claimed,
        includeDelayed=args.include_delayed,
        tags=args.tag,
    )
    if args.limit is not None:
        messages = _take(messages, args.limit)
    session.out.messages(messages)
    return EXIT_OK


def _take(iterator: Iterable[Any], count: int) -> Iterable[Any]:
    if count <= 0:
        return
    for n, item in enumerate(iterator, 1):
        yield item
        if n >= count:
            return


def getMessages(session: Session, args: argparse.Namespace) -> int:
    if len(args.ids) == 1:
        messages = [session.client.getMessage(args.queue, args.ids[0])]
    else:
        messages = session.client.getMessages(args.queue, args.ids)
    session.out.messages(messages)
    return EXIT_OK


def deleteMessages(session: Session, args: argparse.Namespace) -> int:
    if len(args.ids) == 1:
        session.client.deleteMessage(args.queue, args.ids[0], args.claim)
    else:
        session.client.deleteMessages(
            args.queue, args.ids, [args.claim] if args.claim else ()
        )
    session.out.result(
        {"queue": args.queue, "deleted": args.ids},
        f"Deleted {plural(len(args.ids), 'message')}.",
    )
    return EXIT_OK


def pop(session: Session, args: argparse.Namespace) -> int:
    messages = session.client.pop(args.queue, args.count, tags=args.tag)
    session.out.messages(messages, empty="Nothing to pop.")
    return EXIT_OK


# Claims.


def claim(session: Session, args: argparse.Namespace) -> int:
    out = session.out
    claim = session.client.claim(
        args.queue, ttl=args.ttl, grace=args.grace, limit=args.limit, tags=args.tag
    )
    if out.asJSON:
        out.document(None if claim is None else claim.toJSON())
    elif claim is None:
        out.note("Nothing to claim.")
    else:
        out.text(
            f"Claim {claim.id}: {plural(len(claim.messages), 'message')}"
            + (f" for {claim.ttl}s" if claim.ttl else "")
            + "."
        )
        out.messages(claim.messages)
    return EXIT_OK


def renew(session: Session, args: argparse.Namespace) -> int:
    session.client.renewClaim(args.queue, args.claim, args.ttl, args.grace)
    session.out.result(
        {"id": args.claim, "ttl": args.ttl},
        f"Renewed claim {args.claim} for {args.ttl}s.",
    )
    return EXIT_OK


def release(session: Session, args: argparse.Namespace) -> int:
    session.client.releaseClaim(args.queue, args.claim)
    session.out.result(
        {"id": args.claim, "released": True}, f"Released claim {args.claim}."
    )
    return EXIT_OK


# Watching.


def tail(session: Session, args: argparse.Namespace) -> int:
    out = session.out
    for m in session.client.follow(
        args.queue,
        interval=args.interval,
        fromStart=args.all,
        echo=not args.no_echo,
        tags=args.tag,
        wait=args.wait,
    ):
        if out.asJSON:
            out.line(m.toJSON())
        else:
            tags = f" [{','.join(m.tags)}]" if m.tags else ""
            out.text(f"{m.id}{tags} {dumps(m.body)}")
    return EXIT_OK


def health(session: Session, args: argparse.Namespace) -> int:
    out = session.out
    health = session.client.health()
    if out.asJSON:
        out.document(health.toJSON())
    else:
        out.table(
            ("CHECK", "STATUS"),
            [["storage", "ok" if health.ok else "unreachable"]]
            + ([["error", health.error]] if health.error else []),
        )
    if not health.ok:
        out.note("marconi: the node is unhealthy")
        return EXIT_ERROR
    return EXIT_OK


def ring(session: Session, args: argparse.Namespace) -> int:
    """
    The ring as the node at C{--url} publishes it, with each node's share
    of the queues, its state and the ring version it routes by as that
    node sees it, the queues moving to or from that node, and any node
    whose ring differs (a configuration mistake, or a change not yet read
    by every node).
    """
    out = session.out
    info = session.client.ring()
    if info.version is None:
        out.result(
            {"version": None, "scheme": None, "nodes": []},
            "No ring: a node on its own serves every queue.",
        )
        return EXIT_OK
    cluster = session.client.health().cluster or {}
    seen = {
        n["name"]: n
        for n in cluster.get("nodes", [])
        if isinstance(n, dict) and isinstance(n.get("name"), str)
    }
    shares = info.shares()
    nodes = [
        {
            "name": n.name,
            "url": n.url,
            "weight": n.weight,
            "share": round(shares.get(n.name, 0.0), 4),
            "state": seen.get(n.name, {}).get("state"),
            "ring_version": seen.get(n.name, {}).get("ring_version"),
        }
        for n in info.nodes
    ]
    listed = {n["name"] for n in nodes}
    # Draining nodes (weight 0) are members outside the ring.
    nodes += [
        {
            "name": name,
            "url": n.get("url"),
            "weight": n.get("weight", 0),
            "share": 0.0,
            "state": n.get("state"),
            "ring_version": n.get("ring_version"),
        }
        for name, n in sorted(seen.items())
        if name not in listed
    ]
    moves = cluster.get("moves")
    mismatch = cluster.get("ring_mismatch") or []
    if out.asJSON:
        out.document(
            {
                "version": info.version,
                "scheme": info.scheme,
                "parameters": info.document.get("parameters", {}),
                "node": info.node,
                "nodes": nodes,
                "moves": moves,
                "ring_mismatch": mismatch,
            }
        )
        return EXIT_OK
    parameters = ", ".join(
        f"{k}={v}" for k, v in sorted(info.document.get("parameters", {}).items())
    )
    out.text(
        f"Ring {info.version} ({info.scheme}{', ' + parameters if parameters else ''})"
        + (f", as node {info.node} sees it" if info.node else "")
    )
    out.table(
        ("NODE", "WEIGHT", "SHARE", "STATE", "URL"),
        (
            [n["name"], n["weight"], f"{n['share']:.1%}", n["state"], n["url"]]
            for n in nodes
        ),
    )
    if isinstance(moves, dict) and (
        moves.get("outgoing") or moves.get("incoming") or moves.get("draining")
    ):
        out.text(
            f"Moving: {moves.get('outgoing', 0)} queues to hand over, "
            f"{moves.get('incoming', 0)} to take over"
            + (" (draining: it stops when done)" if moves.get("draining") else "")
        )
    if mismatch:
        versions = ", ".join(
            f"{name} routes by {seen.get(name, {}).get('ring_version')}"
            for name in mismatch
        )
        out.note(f"marconi: RING MISMATCH: {versions}")
    return EXIT_OK
