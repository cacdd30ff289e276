"""
C{python -m marconi.client.cli}: the C{marconi} command.
"""

import sys

from marconi.client.cli import main

sys.exit(main())
