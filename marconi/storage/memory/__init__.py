"""
The in-memory store: a throwaway node, everything lost when it stops.
"""
