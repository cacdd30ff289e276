"""
The command line of C{marconi}: every sub-command names the function that
runs it with C{set_defaults(func=...)}.
"""

import argparse
import os
from typing import Any, Callable, Optional, Sequence

from marconi.client.cli import commands
from marconi.client.cli.consume import consume

DEFAULT_URL = "http://127.0.0.1:8888"

# The connection options: the flag, what it gives, and a note on its default.
# Each has an environment variable named after it (--client-id:
# MARCONI_CLIENT_ID).
_CONNECTION = (
    ("--url", "the server's URL", f"; default {DEFAULT_URL}"),
    ("--project", "the project (tenant) to act for", ""),
    ("--token", "an auth token, sent as X-Auth-Token", ""),
    ("--client-id", "the Client-ID to send", "; default a fresh UUID"),
)


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """
    The connection and output options; accepted before or after the
    sub-command (the sub-command's copy does not override the top one).
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection and output")
    for flag, what, note in _CONNECTION:
        variable = "MARCONI_" + flag[2:].upper().replace("-", "_")
        value = os.environ.get(variable)
        if flag == "--url":
            value = value or DEFAULT_URL
        group.add_argument(
            flag, default=default(value), help=f"{what} ({variable}{note})"
        )
    group.add_argument(
        "--timeout",
        type=_positive(float),
        default=default(30.0),
        help="seconds to wait for each answer (default 30)",
    )
    group.add_argument(
        "--no-ring",
        action="store_true",
        default=default(False),
        help="send every request to --url, not each queue's to the node "
        "owning it by the cluster's ring",
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


def _command(
    parent: Any,
    name: str,
    help: str,
    func: Callable,
    queue: bool = True,
) -> argparse.ArgumentParser:
    """
    A sub-command run by C{func}, with the common options and a C{QUEUE}
    argument unless C{queue} is false.
    """
    sub = parent.add_parser(name, help=help, description=help)
    _common(sub, suppress=True)
    sub.set_defaults(func=func)
    if queue:
        sub.add_argument("queue", metavar="QUEUE")
    return sub


def _waitSeconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= 300:
        raise argparse.ArgumentTypeError(f"must be from 0 to 300: {text!r}")
    return value


def _wait(parser: argparse.ArgumentParser, what: str) -> None:
    """
    The C{--wait} option of the commands that long-poll.
    """
    parser.add_argument(
        "--wait",
        type=_waitSeconds,
        default=20,
        metavar="SECONDS",
        help=f"seconds the server may hold each request until {what} "
        "(default 20, the server's usual maximum; 0 polls every --interval)",
    )


def _count(
    parser: argparse.ArgumentParser,
    *flags: str,
    default: Optional[int] = None,
    help: Optional[str] = None,
) -> None:
    """
    An option that takes a positive count C{N}.
    """
    parser.add_argument(
        *flags, type=_positive(int), default=default, metavar="N", help=help
    )


def _tags(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument(
        "--tag", "-t", action="append", default=[], metavar="TAG", help=help
    )


def _noEcho(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-echo", action="store_true", help="leave out my own messages"
    )


def buildParser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marconi",
        description="A command-line client of the Marconi message bus.",
        epilog="Exit status: 0 ok, 1 error from the server, 2 usage error, "
        "130 interrupted.",
    )
    _common(parser, suppress=False)
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    subcommands.required = True
    _certs(subcommands)
    _queue(subcommands)
    _messages(subcommands)
    _claims(subcommands)
    _watching(subcommands)
    return parser


def _certs(subcommands: Any) -> None:
    # Listed for --help only: main() hands "certs" to marconi.certs.
    subcommands.add_parser(
        "certs",
        help="make a development cluster CA and node certificates "
        "(marconi certs --help)",
    )


def _queue(subcommands: Any) -> None:
    queue = subcommands.add_parser(
        "queue", help="list, create, delete and inspect queues"
    )
    actions = queue.add_subparsers(dest="queueCommand", metavar="ACTION")
    actions.required = True
    p = _command(
        actions, "list", "list the project's queues", commands.queueList, queue=False
    )
    p.add_argument("--detailed", action="store_true", help="show metadata")
    p.add_argument("--count", action="store_true", help="show how many there are")
    p = _command(actions, "create", "create a queue", commands.queueCreate)
    p.add_argument("metadata", nargs="?", metavar="METADATA", help="a JSON object")
    _command(actions, "delete", "delete a queue and its messages", commands.queueDelete)
    _command(actions, "stats", "count a queue's messages", commands.queueStats)
    p = _command(
        actions, "meta", "show or change a queue's metadata", commands.queueMeta
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set KEY (VALUE is JSON, or else a string)",
    )
    p.add_argument("--unset", action="append", default=[], metavar="KEY")


def _messages(subcommands: Any) -> None:
    p = _command(
        subcommands,
        "post",
        "post messages: a JSON BODY, or a file or stdin of JSON lines",
        commands.post,
    )
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
    _count(p, "--batch-size", default=100)
    _count(
        p,
        "--max-bytes",
        default=262144,
        help="the largest request body to send (default 262144)",
    )

    p = _command(
        subcommands,
        "list",
        "list a queue's messages (all pages)",
        commands.listMessages,
    )
    p.add_argument("--limit", "-n", type=int, metavar="N", help="at most N messages")
    _tags(p, "only messages carrying TAG (repeatable: all of them)")
    _noEcho(p)
    p.add_argument("--include-claimed", action="store_true")
    p.add_argument("--include-delayed", action="store_true")

    p = _command(subcommands, "get", "show messages by id", commands.getMessages)
    p.add_argument("ids", nargs="+", metavar="ID")

    p = _command(
        subcommands, "delete", "delete messages by id", commands.deleteMessages
    )
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--claim", "-c", metavar="CLAIM", help="the claim holding them")

    p = _command(subcommands, "pop", "take and delete messages", commands.pop)
    _count(p, "--count", "-n", default=1)
    _tags(p, "only messages carrying TAG")


def _claims(subcommands: Any) -> None:
    p = _command(subcommands, "claim", "claim messages", commands.claim)
    _count(p, "--limit", "-n")
    p.add_argument("--ttl", type=int, help="seconds the claim lasts")
    p.add_argument("--grace", type=int, help="seconds added to the messages' lives")
    _tags(p, "only messages carrying TAG")

    p = _command(subcommands, "renew", "renew a claim", commands.renew)
    p.add_argument("claim", metavar="CLAIM")
    p.add_argument("--ttl", type=int, default=300)
    p.add_argument("--grace", type=int)

    p = _command(subcommands, "release", "release a claim", commands.release)
    p.add_argument("claim", metavar="CLAIM")

    p = _command(
        subcommands,
        "consume",
        "run CMD once per claimed message (body on stdin): delete on "
        "success, release on failure",
        consume,
    )
    p.usage = "marconi consume [options] QUEUE -- CMD [ARG ...]"
    _count(p, "--limit", "-n", default=1, help="messages per claim (default 1)")
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
    _wait(p, "there is a message to claim (not with --drain)")
    _count(
        p,
        "--max-attempts",
        default=3,
        help="failures of one message before it is left claimed",
    )


def _watching(subcommands: Any) -> None:
    p = _command(
        subcommands, "tail", "print new messages as they arrive", commands.tail
    )
    p.add_argument("--all", action="store_true", help="start with those already there")
    p.add_argument("--interval", type=_positive(float), default=1.0)
    _wait(p, "a new message comes")
    _tags(p, "only messages carrying TAG")
    _noEcho(p)

    _command(
        subcommands, "health", "check the node's health", commands.health, queue=False
    )
    _command(
        subcommands,
        "ring",
        "show the cluster's ring: its version and each node's weight, "
        "share of the queues, state and URL",
        commands.ring,
        queue=False,
    )


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
