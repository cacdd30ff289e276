"""
What every command of C{marconi} is given besides its arguments.
"""

import time
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from marconi.client.cli.output import Output


@dataclass
class Session:
    """
    @ivar client: a L{marconi.client.blocking.BlockingClient} (or one that
        answers the same calls).
    @ivar out: where results go.
    @ivar stdin: where C{post} reads messages.
    @ivar sleep: how C{consume} waits between empty claims.
    @ivar clock: the seconds of a monotonic clock, to tell whether an
        empty claim waited on the server.
    """

    client: Any
    out: Output
    stdin: TextIO
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
