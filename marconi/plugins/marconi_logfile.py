"""
The C{file} logging driver.
"""

from marconi.core.drivers import LoggingDriverPlugin

logfile = LoggingDriverPlugin(
    name="file",
    description="Log lines (text or JSON) in a file rotated by size",
    checker="marconi.observability.logs.checkFile",
    factory="marconi.observability.logs.makeFile",
)
