"""
Reading the messages to post: a JSON argument, a file, or stdin, each
holding one JSON document or JSON lines.
"""

import argparse
import json
from typing import TextIO

from marconi.client.cli.status import UsageError
from marconi.client.models import OutgoingMessage


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


def _readValues(args: argparse.Namespace, stdin: TextIO) -> tuple[list, str]:
    """
    The JSON values given, and where they came from: C{"file"}, C{"stdin"}
    or C{"argument"}.
    """
    if args.body is not None and args.file is not None:
        raise UsageError("give a BODY or --file, not both")
    if args.file is not None:
        try:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise UsageError(f"cannot read {args.file}: {e.strerror}") from None
        return parseDocuments(text, args.file), "file"
    if args.body is None or args.body == "-":
        if args.body is None and stdin.isatty():
            raise UsageError("give a BODY, --file FILE, or messages on stdin")
        return parseDocuments(stdin.read(), "stdin"), "stdin"
    try:
        return [json.loads(args.body)], "argument"
    except ValueError:
        raise UsageError("BODY is not JSON (quote a string as '\"text\"')") from None


def readMessages(
    args: argparse.Namespace, stdin: TextIO
) -> tuple[list[OutgoingMessage], str]:
    """
    The messages C{marconi post} was given, with the command line's
    C{--ttl}, C{--delay} and C{--tag} as defaults, and where they came
    from.
    """
    values, origin = _readValues(args, stdin)
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
