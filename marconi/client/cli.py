"""
The C{marconi} command: a shell client of a Marconi server.

    marconi queue list|create|delete|stats|meta ...
    marconi post QUEUE [BODY|-] [--file FILE]
    marconi list QUEUE / get QUEUE ID... / delete QUEUE ID...
    marconi claim QUEUE / renew QUEUE CLAIM / release QUEUE CLAIM / pop QUEUE
    marconi consume QUEUE -- CMD ...
    marconi tail QUEUE
    marconi health

The server, project, token and client id come from C{--url}, C{--project},
C{--token} and C{--client-id}, or from C{MARCONI_URL}, C{MARCONI_PROJECT},
C{MARCONI_TOKEN} and C{MARCONI_CLIENT_ID}.

Exit codes: 0 success, 1 an error from the server (its description on
stderr) or the server cannot be reached, 2 a usage error, 130 interrupted
(Ctrl-C).

The command runs the client library through its blocking facade: the
reactor runs in a background thread and this module's code is plain
blocking Python in the main thread, so Ctrl-C is an ordinary
L{KeyboardInterrupt}, and the commands run by C{consume} are ordinary
subprocesses.  Twisted is imported only once the arguments are parsed.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterable, Optional, Sequence, TextIO

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNABLE = 127
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141

DEFAULT_URL = "http://127.0.0.1:8888"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class UsageError(Exception):
    """
    The command line asks for something impossible; exit 2.
    """


# Output.


class Output:
    """
    Where results go: tables for people, JSON for scripts.

    With C{--json}, a single result is one JSON document and a collection
    is JSON lines (one document per line), so that long listings and
    C{tail} stream.
    """

    def __init__(self, asJSON: bool, out: TextIO, err: TextIO) -> None:
        self.asJSON = asJSON
        self.out = out
        self.err = err

    def document(self, value: Any) -> None:
        self.out.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")

    def line(self, value: Any) -> None:
        self.out.write(_dumps(value) + "\n")
        self.out.flush()

    def text(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        cells = [[_cell(v) for v in row] for row in rows]
        if not cells:
            return
        if self.out.isatty():
            width = shutil.get_terminal_size().columns
            cells = [row[:-1] + [_fit(row[-1], width, row, headers)] for row in cells]
        widths = [
            max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)
        ]
        for row in [list(headers), *cells]:
            padded = [v.ljust(widths[i]) for i, v in enumerate(row[:-1])]
            self.out.write("  ".join(padded + [row[-1]]).rstrip() + "\n")
        self.out.flush()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return _dumps(value)


def _fit(last: str, width: int, row: Sequence[str], headers: Sequence[str]) -> str:
    """
    Cut the last column so a row fits the terminal.
    """
    used = sum(
        max(len(v), len(h)) + 2 for v, h in zip(row[:-1], headers[:-1], strict=False)
    )
    room = max(width - used, 20)
    return last if len(last) <= room else last[: room - 1] + "…"


class Progress:
    """
    A progress bar on a terminal's stderr; nothing when stderr is not a
    terminal.
    """

    def __init__(self, stream: TextIO, label: str, total: Optional[int]) -> None:
        self.stream = stream
        self.label = label
        self.total = total
        self.done = 0
        self.enabled = bool(total) and stream.isatty()
        self._shown = -1

    def advance(self, count: int = 1) -> None:
        self.done += count
        if not self.enabled or not self.total:
            return
        fraction = min(self.done / self.total, 1.0)
        step = int(fraction * 200)
        if step == self._shown:
            return
        self._shown = step
        width = 30
        filled = int(fraction * width)
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {self.done}/{self.total} {fraction:4.0%}"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self._shown >= 0:
            self.stream.write("\n")
            self.stream.flush()


# JSON shapes of results for --json (as the API names things).


def messageJSON(m: Any) -> dict:
    doc: dict = {"id": m.id, "ttl": m.ttl, "age": m.age, "body": m.body}
    if m.href is not None:
        doc["href"] = m.href
    if m.checksum is not None:
        doc["checksum"] = m.checksum
    doc["tags"] = list(m.tags)
    if m.claimId is not None:
        doc["claim_id"] = m.claimId
    if m.claimCount is not None:
        doc["claim_count"] = m.claimCount
    return doc


def claimJSON(c: Any) -> dict:
    return {
        "id": c.id,
        "href": c.href,
        "ttl": c.ttl,
        "grace": c.grace,
        "messages": [messageJSON(m) for m in c.messages],
    }


def statsJSON(s: Any) -> dict:
    counts: dict = {
        "free": s.free,
        "claimed": s.claimed,
        "delayed": s.delayed,
        "total": s.total,
    }
    for name, ref in (("oldest", s.oldest), ("newest", s.newest)):
        if ref is not None:
            counts[name] = {
                "id": ref.id,
                "href": ref.href,
                "age": ref.age,
                "created": ref.created,
            }
    return {"messages": counts}


def _messageRows(messages: Iterable[Any]) -> Iterable[list]:
    for m in messages:
        yield [m.id, f"{m.age}s", f"{m.ttl}s", ",".join(m.tags) or "-", _dumps(m.body)]


_MESSAGE_HEADERS = ("ID", "AGE", "TTL", "TAGS", "BODY")


# Reading messages to post.


def parseDocuments(text: str, origin: str) -> list:
    """
    The JSON values of C{text}: one JSON document, or JSON lines (one value
    per non-blank line).
    """
    if not text.strip():
        raise UsageError(f"{origin} holds no messages")
    try:
        return [json.loads(text)]
    except ValueError:
        pass
    values = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except ValueError as e:
            raise UsageError(f"{origin}, line {number}: not JSON ({e})") from None
    return values


def _readMessages(args: argparse.Namespace, stdin: TextIO) -> tuple[list, str]:
    from marconi.client.models import OutgoingMessage

    if args.body is not None and args.file is not None:
        raise UsageError("give a BODY or --file, not both")
    if args.file is not None:
        try:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise UsageError(f"cannot read {args.file}: {e.strerror}") from None
        values, origin = parseDocuments(text, args.file), "file"
    elif args.body is None or args.body == "-":
        if args.body is None and stdin.isatty():
            raise UsageError("give a BODY, --file FILE, or messages on stdin")
        values, origin = parseDocuments(stdin.read(), "stdin"), "stdin"
    else:
        try:
            values = [json.loads(args.body)]
        except ValueError:
            raise UsageError(
                "BODY is not JSON (quote a string as '\"text\"')"
            ) from None
        origin = "argument"
    messages = []
    for value in values:
        if args.message_objects:
            try:
                message = OutgoingMessage.fromJSON(value)
            except ValueError as e:
                raise UsageError(str(e)) from None
        else:
            message = OutgoingMessage(value)
        messages.append(
            OutgoingMessage(
                message.body,
                ttl=message.ttl if message.ttl is not None else args.ttl,
                delay=message.delay if message.delay is not None else args.delay,
                tags=tuple(message.tags) or tuple(args.tag),
            )
        )
    return messages, origin


# Commands.


class Commands:
    """
    The sub-commands, each given the parsed arguments.
    """

    def __init__(
        self, client: Any, out: Output, stdin: TextIO, sleep: Callable = time.sleep
    ) -> None:
        self.client = client
        self.out = out
        self.stdin = stdin
        self.sleep = sleep

    # Queues.

    def queue_list(self, args: argparse.Namespace) -> int:
        count = None
        if args.count:
            count = self.client.listQueues(limit=1, withCount=True).count
        queues = self.client.queues(detailed=args.detailed)
        if self.out.asJSON:
            for q in queues:
                doc = {"name": q.name, "href": q.href}
                if args.detailed:
                    doc["metadata"] = q.metadata
                self.out.line(doc)
            return EXIT_OK
        if args.detailed:
            self.out.table(("NAME", "METADATA"), ([q.name, q.metadata] for q in queues))
        else:
            self.out.table(("NAME",), ([q.name] for q in queues))
        if count is not None:
            self.out.text(f"{count} queue{'s' if count != 1 else ''}")
        return EXIT_OK

    def queue_create(self, args: argparse.Namespace) -> int:
        metadata = None
        if args.metadata is not None:
            try:
                metadata = json.loads(args.metadata)
            except ValueError:
                raise UsageError("METADATA is not JSON") from None
            if not isinstance(metadata, dict):
                raise UsageError("METADATA must be a JSON object")
        created = self.client.createQueue(args.queue, metadata)
        if self.out.asJSON:
            self.out.document({"name": args.queue, "created": created})
        elif created:
            self.out.text(f"Created queue {args.queue}.")
        else:
            self.out.text(f"Queue {args.queue} already exists.")
        return EXIT_OK

    def queue_delete(self, args: argparse.Namespace) -> int:
        self.client.deleteQueue(args.queue)
        if self.out.asJSON:
            self.out.document({"name": args.queue, "deleted": True})
        else:
            self.out.text(f"Deleted queue {args.queue}.")
        return EXIT_OK

    def queue_stats(self, args: argparse.Namespace) -> int:
        stats = self.client.queueStats(args.queue)
        if self.out.asJSON:
            self.out.document(statsJSON(stats))
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
        self.out.table(("MESSAGES", "VALUE"), rows)
        return EXIT_OK

    def queue_meta(self, args: argparse.Namespace) -> int:
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
            metadata = self.client.updateQueueMetadata(
                args.queue, set=updates, remove=args.unset
            )
        else:
            metadata = self.client.queueMetadata(args.queue)
        if self.out.asJSON:
            self.out.document(metadata)
        else:
            self.out.table(
                ("KEY", "VALUE"), ([k, metadata[k]] for k in sorted(metadata))
            )
        return EXIT_OK

    # Messages.

    def post(self, args: argparse.Namespace) -> int:
        messages, origin = _readMessages(args, self.stdin)
        progress = Progress(
            self.out.err,
            f"posting to {args.queue}",
            len(messages) if origin != "argument" and len(messages) > 1 else None,
        )
        ids: list[str] = []
        try:
            for batch in self.client.postBatches(
                args.queue, messages, batchSize=args.batch_size, maxBytes=args.max_bytes
            ):
                ids += batch
                progress.advance(len(batch))
        finally:
            progress.finish()
            if len(ids) < len(messages) and ids:
                self.out.note(f"marconi: posted {len(ids)} of {len(messages)} messages")
        if self.out.asJSON:
            self.out.document({"queue": args.queue, "ids": ids})
        else:
            for i in ids:
                self.out.text(i)
        return EXIT_OK

    def list(self, args: argparse.Namespace) -> int:
        messages = self.client.messages(
            args.queue,
            echo=not args.no_echo,
            includeClaimed=args.include_claimed,
            includeDelayed=args.include_delayed,
            tags=args.tag,
        )
        if args.limit is not None:
            messages = _take(messages, args.limit)
        if self.out.asJSON:
            for m in messages:
                self.out.line(messageJSON(m))
        else:
            self.out.table(_MESSAGE_HEADERS, _messageRows(messages))
        return EXIT_OK

    def get(self, args: argparse.Namespace) -> int:
        if len(args.ids) == 1:
            messages = [self.client.getMessage(args.queue, args.ids[0])]
        else:
            messages = self.client.getMessages(args.queue, args.ids)
        if self.out.asJSON:
            for m in messages:
                self.out.line(messageJSON(m))
        else:
            self.out.table(_MESSAGE_HEADERS, _messageRows(messages))
        return EXIT_OK

    def delete(self, args: argparse.Namespace) -> int:
        if len(args.ids) == 1:
            self.client.deleteMessage(args.queue, args.ids[0], args.claim)
        else:
            self.client.deleteMessages(
                args.queue, args.ids, [args.claim] if args.claim else ()
            )
        if self.out.asJSON:
            self.out.document({"queue": args.queue, "deleted": args.ids})
        else:
            n = len(args.ids)
            self.out.text(f"Deleted {n} message{'s' if n != 1 else ''}.")
        return EXIT_OK

    def pop(self, args: argparse.Namespace) -> int:
        messages = self.client.pop(args.queue, args.count, tags=args.tag)
        if self.out.asJSON:
            for m in messages:
                self.out.line(messageJSON(m))
        elif messages:
            self.out.table(_MESSAGE_HEADERS, _messageRows(messages))
        else:
            self.out.note("Nothing to pop.")
        return EXIT_OK

    # Claims.

    def claim(self, args: argparse.Namespace) -> int:
        claim = self.client.claim(
            args.queue, ttl=args.ttl, grace=args.grace, limit=args.limit, tags=args.tag
        )
        if self.out.asJSON:
            self.out.document(None if claim is None else claimJSON(claim))
        elif claim is None:
            self.out.note("Nothing to claim.")
        else:
            n = len(claim.messages)
            self.out.text(
                f"Claim {claim.id}: {n} message{'s' if n != 1 else ''}"
                + (f" for {claim.ttl}s" if claim.ttl else "")
                + "."
            )
            self.out.table(_MESSAGE_HEADERS, _messageRows(claim.messages))
        return EXIT_OK

    def renew(self, args: argparse.Namespace) -> int:
        self.client.renewClaim(args.queue, args.claim, args.ttl, args.grace)
        if self.out.asJSON:
            self.out.document({"id": args.claim, "ttl": args.ttl})
        else:
            self.out.text(f"Renewed claim {args.claim} for {args.ttl}s.")
        return EXIT_OK

    def release(self, args: argparse.Namespace) -> int:
        self.client.releaseClaim(args.queue, args.claim)
        if self.out.asJSON:
            self.out.document({"id": args.claim, "released": True})
        else:
            self.out.text(f"Released claim {args.claim}.")
        return EXIT_OK

    def consume(self, args: argparse.Namespace) -> int:
        if not args.cmd:
            raise UsageError(
                "consume needs a command: marconi consume QUEUE -- CMD ..."
            )
        return Consumer(self, args).run()

    def tail(self, args: argparse.Namespace) -> int:
        for m in self.client.follow(
            args.queue,
            interval=args.interval,
            fromStart=args.all,
            echo=not args.no_echo,
            tags=args.tag,
        ):
            if self.out.asJSON:
                self.out.line(messageJSON(m))
            else:
                tags = f" [{','.join(m.tags)}]" if m.tags else ""
                self.out.text(f"{m.id}{tags} {_dumps(m.body)}")
        return EXIT_OK

    def health(self, args: argparse.Namespace) -> int:
        health = self.client.health()
        if self.out.asJSON:
            doc: dict = {
                "storage_reachable": health.storageReachable,
                "operation_status": health.operations,
            }
            if health.error is not None:
                doc["error"] = health.error
            self.out.document(doc)
        else:
            self.out.table(
                ("CHECK", "STATUS"),
                [["storage", "ok" if health.ok else "unreachable"]]
                + ([["error", health.error]] if health.error else []),
            )
        if not health.ok:
            self.out.note("marconi: the node is unhealthy")
            return EXIT_ERROR
        return EXIT_OK


def _take(iterator: Iterable[Any], count: int) -> Iterable[Any]:
    if count <= 0:
        return
    for n, item in enumerate(iterator, 1):
        yield item
        if n >= count:
            return


class Consumer:
    """
    The claim loop of C{marconi consume}: claim, run the command once per
    message with its body (JSON) on stdin, delete the message when the
    command succeeds, release the claim when it fails (so the message and
    the rest of the batch can be claimed again).  A message that failed
    C{--max-attempts} times in this run is not released again: it stays
    claimed until the claim expires, and is skipped.  The claim is renewed
    while a command runs.
    """

    def __init__(self, commands: Commands, args: argparse.Namespace) -> None:
        self.client = commands.client
        self.out = commands.out
        self.sleep = commands.sleep
        self.args = args
        self.attempts: dict[str, int] = {}
        self.givenUp: set[str] = set()
        self.processed = 0
        self.held: Optional[str] = None

    def run(self) -> int:
        args = self.args
        total = None
        if args.drain and self.out.err.isatty():
            total = self.client.queueStats(args.queue).free
        progress = Progress(self.out.err, f"draining {args.queue}", total)
        try:
            while True:
                claim = self.client.claim(
                    args.queue,
                    ttl=args.ttl,
                    grace=args.grace,
                    limit=args.limit,
                    tags=args.tag,
                )
                if claim is None:
                    if args.drain:
                        break
                    self.sleep(args.interval)
                    continue
                self.held = claim.id
                self.handle(claim, progress)
                self.held = None
        except BaseException:
            if self.held is not None:
                self.releaseQuietly(self.held)
            raise
        finally:
            progress.finish()
        if self.givenUp:
            n = len(self.givenUp)
            self.out.note(
                f"marconi: {n} message{'s' if n != 1 else ''} failed "
                f"{args.max_attempts} times and {'were' if n != 1 else 'was'} "
                "left claimed"
            )
            return EXIT_ERROR
        return EXIT_OK

    def releaseQuietly(self, claimId: str) -> None:
        try:
            self.client.releaseClaim(self.args.queue, claimId)
        except Exception:
            pass

    def handle(self, claim: Any, progress: Progress) -> None:
        queue = self.args.queue
        for message in claim.messages:
            if message.id in self.givenUp:
                continue
            code = self.runCommand(message, claim)
            if code == 0:
                self.client.deleteMessage(queue, message.id, claim.id)
                self.processed += 1
                progress.advance()
                continue
            tries = self.attempts.get(message.id, 0) + 1
            self.attempts[message.id] = tries
            self.out.note(
                f"marconi: command failed with status {code} on message "
                f"{message.id} (attempt {tries} of {self.args.max_attempts})"
            )
            if tries >= self.args.max_attempts:
                self.givenUp.add(message.id)
                continue
            self.client.releaseClaim(queue, claim.id)
            return

    def runCommand(self, message: Any, claim: Any) -> int:
        env = dict(os.environ)
        env.update(
            MARCONI_QUEUE=self.args.queue,
            MARCONI_MESSAGE_ID=message.id,
            MARCONI_CLAIM_ID=claim.id,
            MARCONI_MESSAGE_TAGS=",".join(message.tags),
        )
        data = (_dumps(message.body) + "\n").encode("utf-8")
        try:
            process = subprocess.Popen(self.args.cmd, stdin=subprocess.PIPE, env=env)
        except OSError as e:
            raise NotRunnable(f"cannot run {self.args.cmd[0]}: {e.strerror}") from None
        try:
            feeder = threading.Thread(target=_feed, args=(process, data), daemon=True)
            feeder.start()
            renewEvery = max((claim.ttl or self.args.ttl) / 2, 1)
            while True:
                try:
                    return process.wait(timeout=renewEvery)
                except subprocess.TimeoutExpired:
                    self.client.renewClaim(self.args.queue, claim.id, self.args.ttl)
        except BaseException:
            _stop(process)
            raise


class NotRunnable(Exception):
    """
    The consume command cannot be started; exit 127.
    """


def _feed(process: subprocess.Popen, data: bytes) -> None:
    assert process.stdin is not None
    try:
        process.stdin.write(data)
        process.stdin.close()
    except (BrokenPipeError, OSError):
        pass


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGINT)
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    except OSError:
        pass


# The command line.


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """
    The connection and output options; accepted before or after the
    sub-command (the sub-command's copy does not override the top one).
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    env = os.environ.get
    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--url",
        default=default(env("MARCONI_URL") or DEFAULT_URL),
        help="the server's URL (MARCONI_URL; default %s)" % DEFAULT_URL,
    )
    group.add_argument(
        "--project",
        default=default(env("MARCONI_PROJECT")),
        help="the project (tenant) to act for (MARCONI_PROJECT)",
    )
    group.add_argument(
        "--token",
        default=default(env("MARCONI_TOKEN")),
        help="an auth token, sent as X-Auth-Token (MARCONI_TOKEN)",
    )
    group.add_argument(
        "--client-id",
        default=default(env("MARCONI_CLIENT_ID")),
        help="the Client-ID to send (MARCONI_CLIENT_ID; default a fresh UUID)",
    )
    group.add_argument(
        "--timeout",
        type=_positive(float),
        default=default(30.0),
        help="seconds to wait for each answer (default 30)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print JSON (one document, or JSON lines for collections)",
    )


def _positive(kind: Callable) -> Callable:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value

    return parse


def _tags(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument(
        "--tag", "-t", action="append", default=[], metavar="TAG", help=help
    )


def buildParser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marconi",
        description="A command-line client of the Marconi message bus.",
        epilog="Exit status: 0 ok, 1 error from the server, 2 usage error, "
        "130 interrupted.",
    )
    _common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def command(parent: Any, name: str, help: str) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help, description=help)
        _common(sub, suppress=True)
        return sub

    # Listed for --help only: main() hands "certs" to marconi.certs.
    commands.add_parser(
        "certs",
        help="make a development cluster CA and node certificates "
        "(marconi certs --help)",
    )
    queue = commands.add_parser("queue", help="list, create, delete and inspect queues")
    queues = queue.add_subparsers(dest="queueCommand", metavar="ACTION")
    queues.required = True
    p = command(queues, "list", "list the project's queues")
    p.add_argument("--detailed", action="store_true", help="show metadata")
    p.add_argument("--count", action="store_true", help="show how many there are")
    p = command(queues, "create", "create a queue")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("metadata", nargs="?", metavar="METADATA", help="a JSON object")
    p = command(queues, "delete", "delete a queue and its messages")
    p.add_argument("queue", metavar="QUEUE")
    p = command(queues, "stats", "count a queue's messages")
    p.add_argument("queue", metavar="QUEUE")
    p = command(queues, "meta", "show or change a queue's metadata")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set KEY (VALUE is JSON, or else a string)",
    )
    p.add_argument("--unset", action="append", default=[], metavar="KEY")

    p = command(
        commands,
        "post",
        "post messages: a JSON BODY, or a file or stdin of JSON lines",
    )
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument(
        "body",
        nargs="?",
        metavar="BODY",
        help="a JSON body, or - for stdin (the default when stdin is not a terminal)",
    )
    p.add_argument("--file", "-f", metavar="FILE", help="a file of JSON lines")
    p.add_argument("--ttl", type=int, help="seconds each message lives")
    p.add_argument("--delay", type=int, help="seconds before it can be read")
    _tags(p, "tag each message (repeatable)")
    p.add_argument(
        "--message-objects",
        action="store_true",
        help='each value is {"body": ..., "ttl": ..., "delay": ..., "tags": [...]}',
    )
    p.add_argument("--batch-size", type=_positive(int), default=100, metavar="N")
    p.add_argument(
        "--max-bytes",
        type=_positive(int),
        default=262144,
        metavar="N",
        help="the largest request body to send (default 262144)",
    )

    p = command(commands, "list", "list a queue's messages (all pages)")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--limit", "-n", type=int, metavar="N", help="at most N messages")
    _tags(p, "only messages carrying TAG (repeatable: all of them)")
    p.add_argument("--no-echo", action="store_true", help="leave out my own messages")
    p.add_argument("--include-claimed", action="store_true")
    p.add_argument("--include-delayed", action="store_true")

    p = command(commands, "get", "show messages by id")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("ids", nargs="+", metavar="ID")

    p = command(commands, "delete", "delete messages by id")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--claim", "-c", metavar="CLAIM", help="the claim holding them")

    p = command(commands, "pop", "take and delete messages")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--count", "-n", type=_positive(int), default=1, metavar="N")
    _tags(p, "only messages carrying TAG")

    p = command(commands, "claim", "claim messages")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--limit", "-n", type=_positive(int), metavar="N")
    p.add_argument("--ttl", type=int, help="seconds the claim lasts")
    p.add_argument("--grace", type=int, help="seconds added to the messages' lives")
    _tags(p, "only messages carrying TAG")

    p = command(commands, "renew", "renew a claim")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("claim", metavar="CLAIM")
    p.add_argument("--ttl", type=int, default=300)
    p.add_argument("--grace", type=int)

    p = command(commands, "release", "release a claim")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("claim", metavar="CLAIM")

    p = command(
        commands,
        "consume",
        "run CMD once per claimed message (body on stdin): delete on "
        "success, release on failure",
    )
    p.usage = "marconi consume [options] QUEUE -- CMD [ARG ...]"
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument(
        "--limit",
        "-n",
        type=_positive(int),
        default=1,
        metavar="N",
        help="messages per claim (default 1)",
    )
    p.add_argument("--ttl", type=int, default=300, help="claim ttl (default 300)")
    p.add_argument("--grace", type=int, default=60)
    _tags(p, "only messages carrying TAG")
    p.add_argument(
        "--drain", action="store_true", help="stop when there is nothing to claim"
    )
    p.add_argument(
        "--interval",
        type=_positive(float),
        default=1.0,
        help="seconds between claims when the queue is empty",
    )
    p.add_argument(
        "--max-attempts",
        type=_positive(int),
        default=3,
        metavar="N",
        help="failures of one message before it is left claimed",
    )

    p = command(commands, "tail", "print new messages as they arrive")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--all", action="store_true", help="start with those already there")
    p.add_argument("--interval", type=_positive(float), default=1.0)
    _tags(p, "only messages carrying TAG")
    p.add_argument("--no-echo", action="store_true", help="leave out my own messages")

    command(commands, "health", "check the node's health")
    return parser


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """
    Parse C{argv}; the words after C{--} are C{consume}'s command.
    """
    parser = buildParser()
    argv = list(argv)
    cmd: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        head, tail = argv[:at], argv[at + 1 :]
        if "consume" in head:
            argv, cmd = head, tail
    args = parser.parse_args(argv)
    args.cmd = cmd
    return args


def run(
    argv: Sequence[str],
    stdin: TextIO,
    stdout: TextIO,
    stderr: TextIO,
    makeClient: Optional[Callable[[argparse.Namespace], Any]] = None,
) -> int:
    """
    Run one command line; returns the exit status.
    """
    try:
        args = parseArguments(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    out = Output(args.json, stdout, stderr)
    name = args.command
    if name == "queue":
        name = f"queue_{args.queueCommand}"
    from marconi.client import errors

    client = None
    try:
        client = (makeClient or _blockingClient)(args)
        return getattr(Commands(client, out, stdin), name)(args)
    except UsageError as e:
        out.note(f"marconi: error: {e}")
        return EXIT_USAGE
    except NotRunnable as e:
        out.note(f"marconi: {e}")
        return EXIT_NOT_RUNNABLE
    except errors.APIError as e:
        out.note(f"marconi: {e.title}: {e.description}")
        return EXIT_ERROR
    except errors.ClientError as e:
        out.note(f"marconi: {e}")
        return EXIT_ERROR


def _blockingClient(args: argparse.Namespace) -> Any:
    from marconi.client.blocking import BlockingClient

    return BlockingClient(
        args.url,
        project=args.project,
        token=args.token,
        clientId=args.client_id,
        timeout=args.timeout,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """
    The console entry point.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["certs"]:
        from marconi.certs import main as certs

        return certs(argv[1:])
    try:
        return run(argv, sys.stdin, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (| head): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE


if __name__ == "__main__":
    sys.exit(main())
