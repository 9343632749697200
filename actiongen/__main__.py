"""`python -m actiongen ...`: the command line of actiongen.cli."""
import sys

from .cli import main

sys.exit(main())
