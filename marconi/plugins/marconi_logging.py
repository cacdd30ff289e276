"""
The logging drivers, whose code is in L{marconi.observability.logs}: for a
driver C{Kind}, C{checkKind} checks its settings and C{makeKind} makes its
observer.
"""

from marconi.core.drivers import LoggingDriverPlugin


def _logs(name: str, kind: str, description: str) -> LoggingDriverPlugin:
    module = "marconi.observability.logs"
    return LoggingDriverPlugin(
        name=name,
        description=description,
        checker=f"{module}.check{kind}",
        factory=f"{module}.make{kind}",
    )


stdout = _logs("stdout", "Stdout", "Log lines (text or JSON) on standard output")
logfile = _logs("file", "File", "Log lines (text or JSON) in a file rotated by size")
syslog = _logs(
    "syslog", "Syslog", "Log to a syslog datagram socket (/dev/log or udp:HOST:PORT)"
)
