"""`python -m vidiff` runs the `vidiff` command."""

import sys

from vidiff.cli import main

sys.exit(main())
