"""Entry point of ``python -m detector`` (see detector/cli.py for the commands and flags). The command runs
its work in a session of its own where the kernel's scheduler groups by session (detector/session.py)."""
import sys

from detector import session

if __name__ == "__main__":
    if session.wanted():
        sys.exit(session.run_in_own_session(sys.argv[1:]))
    from detector.cli import main

    sys.exit(main())
