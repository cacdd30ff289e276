"""
The C{syslog} logging driver.
"""

from marconi.core.drivers import LoggingDriverPlugin

syslog = LoggingDriverPlugin(
    name="syslog",
    description="Log to a syslog datagram socket (/dev/log or udp:HOST:PORT)",
    checker="marconi.observability.logs.checkSyslog",
    factory="marconi.observability.logs.makeSyslog",
)
