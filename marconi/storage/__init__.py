"""
The storage drivers, one package each, all of the same shape:

    storage/<name>/uri.py     C{checkURI(uri)}: checks a storage URI without
                              touching the backend or importing its client
    storage/<name>/store.py   C{makeStore(uri, reactor)} and the store

The plugin descriptors in L{marconi.plugins} name them
(L{marconi.core.drivers.StorageDriverPlugin}) and are the only way in: a
store module is imported when the driver is used, never before.  What a
stored message means (claimable, dead-lettered, deletable with a claim) is
in L{marconi.core.rules}.
"""
