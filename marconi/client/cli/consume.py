"""
C{marconi consume}: the claim loop that runs a command once per message.
"""

import argparse
import os
import signal
import subprocess
import threading
from typing import Any, Optional

from marconi.client.cli.output import Progress, dumps, plural
from marconi.client.cli.session import Session
from marconi.client.cli.status import EXIT_ERROR, EXIT_OK, NotRunnable, UsageError


def consume(session: Session, args: argparse.Namespace) -> int:
    if not args.cmd:
        raise UsageError("consume needs a command: marconi consume QUEUE -- CMD ...")
    return Consumer(session, args).run()


class Consumer:
    """
    The claim loop of C{marconi consume}: claim, run the command once per
    message with its body (JSON) on stdin, delete the message when the
    command succeeds, release the claim when it fails (so the message and
    the rest of the batch can be claimed again).  A message that failed
    C{--max-attempts} times in this run is not released again: it stays
    claimed until the claim expires, and is skipped.  The claim is renewed
    while a command runs.

    On an empty queue each claim waits on the server up to C{--wait}
    seconds for a message (long-polling) and the next follows at once; a
    claim answered empty sooner than half its wait (a server that does not
    long-poll) is followed after C{--interval}.  C{--drain} never waits.
    """

    def __init__(self, session: Session, args: argparse.Namespace) -> None:
        self.client = session.client
        self.out = session.out
        self.sleep = session.sleep
        self.clock = session.clock
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
            wait = None if args.drain else args.wait
            while True:
                started = self.clock()
                claim = self.client.claim(
                    args.queue,
                    ttl=args.ttl,
                    grace=args.grace,
                    limit=args.limit,
                    tags=args.tag,
                    wait=wait,
                )
                if claim is None:
                    if args.drain:
                        break
                    if not wait or self.clock() - started < wait / 2:
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
                f"marconi: {plural(n, 'message')} failed "
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
        data = (dumps(message.body) + "\n").encode("utf-8")
        process = _start(self.args.cmd, env)
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


def _start(cmd: list, env: dict) -> subprocess.Popen:
    """
    Start C{cmd}.  A Ctrl-C that comes while it is being started (the
    command may already run and print) is held until L{subprocess.Popen}
    has returned, so that the command is always stopped with the rest.
    """
    held: list = []
    # Only where Ctrl-C raises KeyboardInterrupt (not when it is ignored),
    # and only the main thread may set a handler.
    main = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if main:
        previous = signal.signal(signal.SIGINT, lambda *_: held.append(True))
    try:
        process = subprocess.Popen(cmd, stdin=subprocess.PIPE, env=env)
    except OSError as e:
        raise NotRunnable(f"cannot run {cmd[0]}: {e.strerror}") from None
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    if held:
        _stop(process)
        raise KeyboardInterrupt()
    return process


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
