"""
Marconi: a multi-tenant message bus with an HTTP API, served by Twisted.
"""

__version__ = "0.1.0"
