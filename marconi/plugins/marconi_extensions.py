"""
The extensions (see L{marconi.extensions}), each enabled by name in the
C{[extensions]} section and imported only then.
"""
