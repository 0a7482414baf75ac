"""Command line of the hyperparameter evolution: parse flags, build the configuration, call ``evolve.run``.

    python orchestrate.py --generations 300 --population 50 --data my.yaml --gpus-per-trial 1
    python orchestrate.py --mode async --early-stop asha --gpus-per-trial 0.25 --address auto
    python orchestrate.py --resume runs/evolve/exp        # continue a run exactly where it stopped
    python orchestrate.py --validate runs/evolve/exp      # retrain a finished run's winners with new seeds

The installed console script ``yolo-evolve`` is this module's ``main``. Every flag is generated from the
configuration dataclasses (``evolve.config``): a flag is added by adding a field there. The flags are
turned into a configuration by ``evolve.config_from_argv``, the same function a Python user may call, so
``evolve.run(evolve.config_from_argv(argv))`` is this command without its console and exit statuses.

Exit status: 0 done, 2 bad input (one line on stderr naming the file, key or flag; nothing written), 3 the
run stopped itself (every trial failing for one reason, a run folder that cannot be written, the Ray
cluster's head lost; one line with the resume command), 130 Ctrl-C, 143 SIGTERM (the run stays resumable).
"""
from __future__ import annotations

import signal
import sys
from typing import NoReturn, Sequence

from detector.errors import DataError, HypError
from evolve.config.argv import PROG, parse_argv
from evolve.errors import ConfigError, RunStopped
from evolve.signals import received


def _fail(message: str) -> NoReturn:
    """Bad input: one line on stderr, ``orchestrate.py: error: ...``, and exit status 2."""
    sys.stderr.write(f"{PROG}: error: {' '.join(str(message).split())}\n")
    raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the console script ``yolo-evolve`` calls this."""
    try:
        cfg, args = parse_argv(argv)
    except ConfigError as exc:
        _fail(str(exc))
    from evolve.output.console import setup_console

    setup_console(verbose=args.verbose)
    import evolve

    try:
        evolve.run(cfg)
    except (ConfigError, HypError, DataError) as exc:
        _fail(str(exc))
    except RunStopped:
        return 3  # evolve.run has logged why, and how to resume
    except KeyboardInterrupt:
        # evolve.run has logged how to resume when a run folder exists; nothing more to say here.
        return 128 + (received() or signal.SIGINT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
