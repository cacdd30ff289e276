"""
The exit statuses of the C{marconi} command and the exceptions that choose
them.
"""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNABLE = 127
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141


class UsageError(Exception):
    """
    The command line asks for something impossible; exit 2.
    """


class NotRunnable(Exception):
    """
    The consume command cannot be started; exit 127.
    """
