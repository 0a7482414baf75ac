"""Entry point of ``python -m detector`` (see detector/cli.py for the commands and flags)."""
import sys

from detector.cli import main

if __name__ == "__main__":
    sys.exit(main())
