"""
The C{keystone} auth driver: the project comes from a validated Keystone
token.
"""

from marconi.core.drivers import AuthDriverPlugin

keystone = AuthDriverPlugin(
    name="keystone",
    description="OpenStack Keystone: X-Auth-Token validated with Keystone v3",
    factory="marconi.auth.keystone.makeAuth",
)
