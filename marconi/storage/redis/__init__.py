"""
The Redis store (txredisapi, imported only by C{store.py}).
"""
