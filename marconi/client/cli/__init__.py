"""
The C{marconi} command: a shell client of a Marconi server.

    marconi queue list|create|delete|stats|meta ...
    marconi post QUEUE [BODY|-] [--file FILE]
    marconi list QUEUE / get QUEUE ID... / delete QUEUE ID...
    marconi claim QUEUE / renew QUEUE CLAIM / release QUEUE CLAIM / pop QUEUE
    marconi consume QUEUE -- CMD ...
    marconi tail QUEUE
    marconi health
    marconi ring

The server, project, token and client id come from C{--url}, C{--project},
C{--token} and C{--client-id}, or from C{MARCONI_URL}, C{MARCONI_PROJECT},
C{MARCONI_TOKEN} and C{MARCONI_CLIENT_ID}.

Exit codes: 0 success, 1 an error from the server (its description on
stderr) or the server cannot be reached, 2 a usage error, 130 interrupted
(Ctrl-C).

The command runs the client library through its blocking facade: the
reactor runs in a background thread and this package's code is plain
blocking Python in the main thread, so Ctrl-C is an ordinary
L{KeyboardInterrupt}, and the commands run by C{consume} are ordinary
subprocesses.  Twisted is imported only once the arguments are parsed.

The package's modules: L{status} (exit statuses), L{output} (tables, JSON,
progress), L{reading} (the messages to post), L{commands} and L{consume}
(the sub-commands), L{parser} (the command line); L{main} here is the
console entry point.
"""

import argparse
import os
import sys
from typing import Any, Callable, Optional, Sequence, TextIO

from marconi.client.cli.output import Output, Progress
from marconi.client.cli.parser import DEFAULT_URL, buildParser, parseArguments
from marconi.client.cli.reading import parseDocuments
from marconi.client.cli.session import Session
from marconi.client.cli.status import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_RUNNABLE,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_USAGE,
    NotRunnable,
    UsageError,
)

__all__ = [
    "DEFAULT_URL",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_RUNNABLE",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_USAGE",
    "NotRunnable",
    "Output",
    "Progress",
    "Session",
    "UsageError",
    "buildParser",
    "main",
    "parseArguments",
    "parseDocuments",
    "run",
]

NO_PROJECT = "no project given: use --project PROJECT or set MARCONI_PROJECT"


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
    from marconi.client import errors

    try:
        client = (makeClient or _blockingClient)(args)
        return args.func(Session(client, out, stdin), args)
    except UsageError as e:
        out.note(f"marconi: error: {e}")
        return EXIT_USAGE
    except NotRunnable as e:
        out.note(f"marconi: {e}")
        return EXIT_NOT_RUNNABLE
    except errors.APIError as e:
        if _missingProject(args, e):
            out.note(f"marconi: {NO_PROJECT}")
        else:
            out.note(f"marconi: {e.title}: {e.description}")
        return EXIT_ERROR
    except errors.ClientError as e:
        out.note(f"marconi: {e}")
        return EXIT_ERROR


def _missingProject(args: argparse.Namespace, error: Any) -> bool:
    """
    Whether C{error} is the server refusing a request for want of the
    project this command line did not give.
    """
    return (
        not args.project
        and error.code == 400
        and "project" in f"{error.title} {error.description}".lower()
    )


def _blockingClient(args: argparse.Namespace) -> Any:
    from marconi.client.blocking import BlockingClient

    return BlockingClient(
        args.url,
        project=args.project,
        token=args.token,
        clientId=args.client_id,
        timeout=args.timeout,
        ringAware=not args.no_ring,
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
