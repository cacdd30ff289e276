"""
Marconi's trial tests.

The tree mirrors C{marconi/}: C{tests/api}, C{tests/auth}, C{tests/client},
C{tests/cluster}, C{tests/console}, C{tests/core}, C{tests/observability}
and C{tests/storage} test the room of the same name (the storage contract
suite is C{tests/storage/contract.py}); C{tests/test_tap.py} and
C{tests/test_tls.py} test the modules of those names.  C{tests/integration}
holds the tests that run real C{twistd marconi} daemons as subprocesses
(single nodes, clusters, TLS, faults and partitions, the isolation matrix).
The modules at the top (C{nodeprocess}, C{redisserver}, C{mongoserver},
C{keystoneserver}, C{tlshelpers}, C{rawhttp}, C{apihelpers}, C{zaqarpeer})
start and drive the real parts the tests use.
"""
