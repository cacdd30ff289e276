"""
The MongoDB store (txmongo, imported only by C{store.py}).
"""
