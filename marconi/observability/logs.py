"""
The logging drivers: L{twisted.logger} observers chosen by the C{driver}
setting of the C{[logging]} section.

- C{stdout}: one line per event on standard output, as text or as JSON.
- C{file}: the same lines in a file that is rotated when it grows past
  C{rotate_length} bytes, keeping C{max_rotated_files} old files.
- C{syslog}: one datagram per line to a syslog socket (C{/dev/log} by
  default, or C{udp:HOST:PORT}), in the BSD syslog format local daemons
  read.

Library code never starts logging: these observers are handed to
C{twistd}, which begins logging to them (see L{marconi.observability.wiring}).
The zero-argument factories at the end serve C{twistd --logger}.
"""

import json
import math
import os
import signal
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from typing import IO, Any, Callable, List, Mapping, Optional, Tuple, Union, cast

from twisted.internet.interfaces import IDelayedCall, IReactorThreads, IReactorTime
from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.python.compat import ioType
from twisted.python.logfile import LogFile
from zope.interface import implementer

FORMATS = ("text", "json")
DEFAULT_ROTATE_LENGTH = 10_000_000
DEFAULT_MAX_ROTATED_FILES = 10
DEFAULT_SYSLOG_ADDRESS = "/dev/log"
MAX_DATAGRAM = 8192
#: The namespace of the access log, whose lines a L{StreamObserver} keeps
#: for a moment to write them together (see L{marconi.api.http}).
ACCESS_NAMESPACE = "marconi.access"
#: The system of an access line in text (see L{_textLine}).
_ACCESS_SYSTEM = ACCESS_NAMESPACE + "#info"
#: How long the access log's lines may wait before they are written, by
#: default: the C{flush_interval} setting, in seconds.
DEFAULT_FLUSH_INTERVAL = 0.1
#: Characters of waiting lines that are written at once.
FLUSH_SIZE = 65536

_LEVELS = {
    LogLevel.debug: "debug",
    LogLevel.info: "info",
    LogLevel.warn: "warn",
    LogLevel.error: "error",
    LogLevel.critical: "critical",
}
_SEVERITIES = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}
FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_SCALARS = (str, int, float, bool, type(None))

#: A syslog address: a Unix socket path, or C{(host, port)} for UDP.
SyslogAddress = Union[str, Tuple[str, int]]


# Formatting.


def eventAsJSONLine(event: LogEvent) -> str:
    """
    An event as one flat JSON object: C{time} (ISO 8601, UTC), C{level},
    C{namespace}, C{message} (the formatted text), every field of the
    event whose value is a JSON scalar, and C{traceback} for a failure.
    """
    when = event.get("log_time") or 0.0
    record: dict = {
        "time": datetime.fromtimestamp(when, timezone.utc).isoformat(
            timespec="milliseconds"
        ),
        "level": _LEVELS.get(event.get("log_level"), "info"),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in record or not isinstance(value, _SCALARS):
            continue
        record[key] = value
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:
            record["traceback"] = repr(failure)
    return json.dumps(record, separators=(",", ":"), default=repr)


class _SecondStamps:
    """
    twisted.logger's text timestamps (RFC 3339, to the second), made once
    per second rather than once per event.
    """

    _last: Tuple[Optional[int], str] = (None, "-")

    def __call__(self, when: Optional[float]) -> str:
        if when is None:
            return formatTime(when)
        # As formatTime rounds it: to the microsecond.
        second = math.floor(round(when, 6))
        last, stamp = self._last
        if second != last:
            stamp = formatTime(when)
            # One assignment, so that a thread never sees half of it.
            self._last = (second, stamp)
        return stamp


_stamps = _SecondStamps()


def _textLine(event: LogEvent) -> Optional[str]:
    text = event.get("log_format")
    if (
        # A format without fields (an access line) is its own text.
        text.__class__ is str
        and text
        and "{" not in text
        and "}" not in text
        and "log_failure" not in event
        and "log_system" not in event
        and "log_flattened" not in event
    ):
        level = event.get("log_level")
        stamp = _stamps(event.get("log_time"))
        system = (
            f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
        )
        text = text.replace("\n", "\n\t")
        return f"{stamp} [{system}] {text}\n"
    return formatEventAsClassicLogText(event, formatTime=_stamps)


def _jsonLine(event: LogEvent) -> str:
    return eventAsJSONLine(event) + "\n"


def lineFormatter(fmt: str) -> Callable[[LogEvent], Optional[str]]:
    return _jsonLine if fmt == "json" else _textLine


# Observers.


@implementer(ILogObserver)
class StreamObserver:
    """
    Writes each event as a line to a text stream (or a binary one, in
    UTF-8), and flushes it.

    While it buffers (from L{startBuffering} to L{stopBuffering}: while
    the node runs), the access log's lines are kept and written together,
    C{interval} seconds after the first of them or as soon as
    L{FLUSH_SIZE} characters wait, in one write and one flush.  Every
    other event is written at once, after the lines kept before it, so
    the lines keep their order.  Only events on the thread that started
    the buffering (the reactor's) are kept; it may be called from any
    thread.
    """

    def __init__(
        self, stream: IO[Any], fmt: str = "text", closeStream: bool = False
    ) -> None:
        self._format = lineFormatter(fmt)
        self._stream = stream
        self._binary = ioType(stream) is not str
        self._close = closeStream
        # Re-entrant: a signal handler (SIGTERM) may log while this thread
        # is inside a write.
        self._lock = threading.RLock()
        self._pending: List[str] = []
        self._size = 0
        self._clock: Optional[IReactorTime] = None
        self._interval = 0.0
        self._thread: Optional[int] = None
        self._timer: Optional[IDelayedCall] = None

    def __call__(self, event: LogEvent) -> None:
        line = self._format(event)
        if not line:
            return
        with self._lock:
            if (
                self._thread is not None
                and event.get("log_namespace") == ACCESS_NAMESPACE
                and threading.get_ident() == self._thread
            ):
                self._keep(line)
            else:
                self._write(line)

    def keepAccessLine(self, text: str, when: float) -> bool:
        """
        Keep the access line C{text} (at C{when}) as L{__call__} keeps the
        text line of an access log event, without the event: when this
        observer writes text and keeps lines, on the thread that keeps
        them.  The line written is the same.

        @return: whether it was kept; if not, the caller logs the event.
        """
        if self._format is not _textLine or threading.get_ident() != self._thread:
            return False
        if "\n" in text:
            text = text.replace("\n", "\n\t")
        line = f"{_stamps(when)} [{_ACCESS_SYSTEM}] {text}\n"
        with self._lock:
            if self._thread is None:
                # Buffering stopped since: written at once, as __call__ does.
                self._write(line)
            else:
                self._keep(line)
        return True

    def _keep(self, line: str) -> None:
        """
        Keep the access line C{line} to write with the next ones, or write
        them all if they are many; the lock is held, on the thread that
        keeps them.
        """
        self._pending.append(line)
        self._size += len(line)
        if self._size < FLUSH_SIZE:
            if self._timer is None:
                self._timer = self._clock.callLater(  # type: ignore[union-attr]
                    self._interval, self._due
                )
            return
        self._write("")

    def _write(self, line: str) -> None:
        """
        Write the kept lines and C{line}, and flush; the lock is held.
        """
        if self._pending:
            self._pending.append(line)
            line = "".join(self._pending)
            self._pending = []
            self._size = 0
        if self._timer is not None and threading.get_ident() == self._thread:
            # Only the reactor's thread touches the reactor's timer; written
            # from another thread, the timer fires with nothing to write.
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if line:
            self._stream.write(line.encode("utf-8") if self._binary else line)
            self._stream.flush()

    def _due(self) -> None:
        with self._lock:
            self._timer = None
            self._write("")

    def startBuffering(self, clock: IReactorTime, interval: float) -> None:
        """
        Keep the access log's lines for up to C{interval} seconds of
        C{clock}; call on the reactor thread.
        """
        with self._lock:
            self._clock = clock
            self._interval = interval
            self._thread = threading.get_ident()

    def stopBuffering(self) -> None:
        """
        Write what is kept, and every line at once from now on.
        """
        with self._lock:
            self._write("")
            self._thread = None

    def rotate(self) -> None:
        """
        Rotate a L{LogFile} stream, once the lines kept so far are in it.
        """
        with self._lock:
            self._write("")
            cast(LogFile, self._stream).rotate()

    def close(self) -> None:
        self.stopBuffering()
        if self._close:
            self._stream.close()


@implementer(ILogObserver)
class SyslogObserver:
    """
    Sends each line of each event to a syslog datagram socket.

    The socket never blocks: when the syslog daemon is gone or its queue is
    full the line is dropped and counted in C{dropped}, so logging can never
    stall the reactor.

    @param address: a path (a Unix datagram socket) or C{(host, port)}.
    """

    def __init__(
        self,
        address: SyslogAddress,
        facility: str = "daemon",
        ident: str = "marconi",
        fmt: str = "text",
        clock: Callable[[], float] = time.time,
    ) -> None:
        target: Union[str, Tuple[object, ...]]
        if isinstance(address, str):
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            target = address
        else:
            family, _, _, _, target = socket.getaddrinfo(
                address[0], address[1], type=socket.SOCK_DGRAM
            )[0]
            self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._address = target
        self._facility = FACILITIES[facility]
        self._tag = f"{ident}[{os.getpid()}]: "
        self._json = fmt == "json"
        # Re-entrant: a signal handler (SIGTERM) may log while this thread
        # is inside a write.
        self._lock = threading.RLock()
        self.dropped = 0

    def __call__(self, event: LogEvent) -> None:
        priority = self._facility * 8 + _SEVERITIES.get(
            event.get("log_level"),
            6,
        )
        header = f"<{priority}>{_bsdTime(event.get('log_time'))} {self._tag}"
        if self._json:
            lines = [eventAsJSONLine(event)]
        else:
            text = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                text = f"{text}\n{failure.getTraceback()}"
            namespace = event.get("log_namespace", "-")
            lines = [
                f"[{namespace}] {line}" for line in text.splitlines() if line.strip()
            ]
        for line in lines:
            datagram = (header + line).encode("utf-8", "replace")[:MAX_DATAGRAM]
            try:
                with self._lock:
                    self._socket.sendto(datagram, self._address)
            except OSError:
                self.dropped += 1

    def close(self) -> None:
        self._socket.close()


def _bsdTime(when: Optional[float]) -> str:
    t = time.localtime(when)
    return f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


# Settings and driver factories.


def _format(settings: Mapping[str, str]) -> str:
    fmt = settings.get("format", "text").strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"[logging] format must be text or json, not {fmt!r}")
    return fmt


def _positiveInt(settings: Mapping[str, str], key: str, default: int) -> int:
    raw = settings.get(key)
    if raw is None:
        return default
    raw = raw.strip()
    scale = 1
    suffixes = {"k": 1000, "m": 1000_000, "g": 1000_000_000}
    if raw[-1:].lower() in suffixes:
        scale = suffixes[raw[-1].lower()]
        raw = raw[:-1]
    try:
        value = int(raw) * scale
    except ValueError:
        raise ValueError(f"[logging] {key} must be a whole number") from None
    if value <= 0:
        raise ValueError(f"[logging] {key} must be positive")
    return value


def _unknown(settings: Mapping[str, str], known: set) -> None:
    unknown = set(settings) - known - {"driver", "access_log", "flush_interval"}
    if unknown:
        raise ValueError(f"unknown [logging] setting(s): {', '.join(sorted(unknown))}")


def flushInterval(settings: Mapping[str, str]) -> float:
    """
    The C{flush_interval} setting: seconds the access log's lines may wait
    to be written together (0: each is written at once).

    @raise ValueError: with a one-line reason.
    """
    raw = settings.get("flush_interval")
    if raw is None:
        return DEFAULT_FLUSH_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("[logging] flush_interval must be a number") from None
    if not 0 <= value <= 10:
        raise ValueError("[logging] flush_interval must be from 0 to 10 seconds")
    return value


def checkStdout(settings: Mapping[str, str]) -> None:
    _unknown(settings, {"format"})
    _format(settings)


def makeStdout(
    settings: Mapping[str, str], stream: Optional[IO[str]] = None
) -> StreamObserver:
    return StreamObserver(sys.stdout if stream is None else stream, _format(settings))


def checkFile(settings: Mapping[str, str]) -> None:
    _unknown(settings, {"format", "path", "rotate_length", "max_rotated_files"})
    _format(settings)
    path = settings.get("path", "").strip()
    if not path:
        raise ValueError("[logging] driver file needs a path")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"[logging] path: no directory {directory}")
    _positiveInt(settings, "rotate_length", DEFAULT_ROTATE_LENGTH)
    _positiveInt(settings, "max_rotated_files", DEFAULT_MAX_ROTATED_FILES)


def makeFile(settings: Mapping[str, str]) -> StreamObserver:
    """
    A file observer.  The file is rotated by size (C{PATH.1} is the newest
    old file); C{max_rotated_files} old files are kept.
    """
    checkFile(settings)
    logFile = LogFile.fromFullPath(
        os.path.abspath(settings["path"].strip()),
        rotateLength=_positiveInt(settings, "rotate_length", DEFAULT_ROTATE_LENGTH),
        maxRotatedFiles=_positiveInt(
            settings, "max_rotated_files", DEFAULT_MAX_ROTATED_FILES
        ),
    )
    # A LogFile has the write, flush and close of a text file.
    return StreamObserver(cast(IO[str], logFile), _format(settings), closeStream=True)


def syslogAddress(value: str) -> SyslogAddress:
    """
    Parse the C{address} setting: C{udp:HOST:PORT}, C{unix:PATH} or a path.
    """
    value = value.strip()
    if value.startswith("udp:"):
        host, sep, port = value[4:].rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"[logging] address {value!r}: use udp:HOST:PORT")
        return (host.strip("[]"), int(port))
    if value.startswith("unix:"):
        value = value[5:]
    if not value:
        raise ValueError("[logging] address is empty")
    return value


def checkSyslog(settings: Mapping[str, str]) -> None:
    _unknown(settings, {"format", "address", "facility", "ident"})
    _format(settings)
    syslogAddress(settings.get("address", DEFAULT_SYSLOG_ADDRESS))
    facility = settings.get("facility", "daemon").strip().lower()
    if facility not in FACILITIES:
        raise ValueError(
            f"[logging] facility must be one of {', '.join(FACILITIES)}, "
            f"not {facility!r}"
        )


def makeSyslog(settings: Mapping[str, str]) -> SyslogObserver:
    checkSyslog(settings)
    return SyslogObserver(
        syslogAddress(settings.get("address", DEFAULT_SYSLOG_ADDRESS)),
        facility=settings.get("facility", "daemon").strip().lower(),
        ident=settings.get("ident", "marconi").strip() or "marconi",
        fmt=_format(settings),
    )


# twistd's own destinations.


def twistdObserver(
    options: Optional[Mapping[str, Any]], reactor: IReactorThreads
) -> Optional[StreamObserver]:
    """
    The observer for a node with no logging driver: the text lines twistd's
    own observer writes, to the same place for the same twistd C{options}
    (C{--logfile}, rotated by size and on C{SIGUSR1}; standard output with
    C{-n} and no C{--logfile}; C{twistd.log} otherwise).

    @param options: twistd's options, or L{None} when twistd does not run
        the node.
    @return: L{None} where twistd's observer stays: no C{options},
        C{--logger}, C{--syslog} (one message per line, nothing to gather),
        C{--debug}, a daemon told to log to standard output (which twistd
        refuses) or a platform without twistd's POSIX options.
    """
    if (
        options is None
        or "nodaemon" not in options
        or options.get("logger")
        or options.get("syslog")
        or options.get("debug")
    ):
        return None
    path = options.get("logfile") or ""
    if path == "-" or (not path and options["nodaemon"]):
        if not options["nodaemon"]:
            return None
        return StreamObserver(sys.stdout)
    logFile = LogFile.fromFullPath(path or "twistd.log")
    observer = StreamObserver(cast(IO[str], logFile), closeStream=True)
    if not signal.getsignal(signal.SIGUSR1):
        # As twistd rotates its log file.
        signal.signal(
            signal.SIGUSR1, lambda *_: reactor.callFromThread(observer.rotate)
        )
    return observer


# For twistd --logger, which takes a callable of no arguments.


def stdoutText() -> StreamObserver:
    """
    C{twistd --logger marconi.observability.logs.stdoutText}
    """
    return makeStdout({})


def stdoutJSON() -> StreamObserver:
    """
    C{twistd --logger marconi.observability.logs.stdoutJSON}
    """
    return makeStdout({"format": "json"})


def syslog() -> SyslogObserver:
    """
    C{twistd --logger marconi.observability.logs.syslog}: to C{/dev/log}.
    """
    return makeSyslog({})
