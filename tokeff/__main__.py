"""`python -m tokeff` runs the same CLI as the `tokeff` console script (useful from a checkout)."""
import sys

from tokeff.cli import main

sys.exit(main())
