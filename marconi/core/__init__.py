"""
The domain of Marconi: queues, messages, claims, tags, TTLs, ids, limits,
validation, errors, and the interfaces every driver provides.

Nothing in this package imports another room of Marconi.
"""
