"""
The HTTP API of Marconi: Klein routes that turn requests into calls of
L{marconi.core.messaging.Messaging} and its results into JSON answers.
"""
