"""
The C{noauth} auth driver: the project comes from the request.
"""

from marconi.core.drivers import AuthDriverPlugin

noauth = AuthDriverPlugin(
    name="noauth",
    description="No authentication: the project is X-Project-ID or the URL's",
    factory="marconi.auth.noauth.makeAuth",
)
