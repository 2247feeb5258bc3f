"""`python -m gptscratch` runs the CLI."""

import sys

from gptscratch.cli import main

sys.exit(main())
