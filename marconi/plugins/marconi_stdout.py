"""
The C{stdout} logging driver.
"""

from marconi.core.drivers import LoggingDriverPlugin

stdout = LoggingDriverPlugin(
    name="stdout",
    description="Log lines (text or JSON) on standard output",
    checker="marconi.observability.logs.checkStdout",
    factory="marconi.observability.logs.makeStdout",
)
