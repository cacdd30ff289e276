"""
Logging and monitoring drivers, and what wires them into a node.
"""
