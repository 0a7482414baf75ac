"""Command line of the hyperparameter evolution: parse flags, build the configuration, call ``evolve.run``.

    python orchestrate.py --generations 300 --population 50 --data my.yaml --gpus-per-trial 1
    python orchestrate.py --mode async --early-stop asha --gpus-per-trial 0.25 --address auto
    python orchestrate.py --resume runs/evolve/exp        # continue a run exactly where it stopped
    python orchestrate.py --validate runs/evolve/exp      # retrain a finished run's winners with new seeds

The installed console script ``yolo-evolve`` is this module's ``main``. Every flag is generated from the
configuration dataclasses (``evolve.config``): a flag is added by adding a field there.

Exit status: 0 done, 2 bad input (one line on stderr naming the file, key or flag; nothing written), 3 the
run stopped itself (every trial failing for one reason, a run folder that cannot be written, the Ray
cluster's head lost; one line with the resume command), 130 Ctrl-C, 143 SIGTERM (the run stays resumable).
"""
from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, Callable, Sequence

from detector.errors import DataError, HypError
from evolve.config import (
    EvolveConfig,
    Flag,
    GAConfig,
    RayConfig,
    SurrogateOptions,
    TrialConfig,
    ValidationConfig,
    default_elite,
    get_setting,
    settings,
)
from evolve.errors import ConfigError, RunStopped
from evolve.signals import received

PROG = "orchestrate.py"
_UNSET = object()
# --help sections, in order, and the section of each part of the configuration.
GROUPS = ("evolution", "trials", "validation", "Ray", "output", "surrogate trainer (--trainer surrogate)")
PART_GROUPS = {"ga": "evolution", "train": "trials", "ray": "Ray"}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``orchestrate.py: error: ...``, and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _converter(spec: Flag) -> Callable[[str], Any]:
    """The flag's parser, with its error turned into argparse's one-line message."""

    def parse(text: str) -> Any:
        try:
            return spec.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(spec.parse, "__name__", "value")
    return parse


def _shown(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)


def build_parser() -> argparse.ArgumentParser:
    """The parser, generated from the configuration fields; defaults are theirs, so --help shows what runs."""
    p = _Parser(prog=PROG, description="Evolve YOLO hyperparameters with a genetic algorithm over Ray Tune "
                "trials. Outputs go to PROJECT/NAME: evolve.csv, hyp_evolve.yaml, evolve_population.yaml, "
                "evolve.png, fitness.png, checkpoint.pkl, evolve.log; then validation.csv, "
                "validation_summary.csv, hyp_validated.yaml, validation.png.",
                epilog="Train with the result: "
                "python -m detector train --hyp runs/evolve/exp/hyp_evolve.yaml")
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    defaults = EvolveConfig()
    for path, spec in settings():
        group = spec.group or PART_GROUPS[path.split(".")[0]]
        default = get_setting(defaults, path)
        shown = "" if "(default:" in spec.help else f" (default: {_shown(default)})"
        kwargs: dict[str, Any] = {"dest": path, "default": default, "help": spec.help + shown}
        if spec.parse is bool:
            kwargs["action"] = "store_true"
        else:
            # argparse would name the value after the dotted dest (GA.POPULATION); name it after the flag
            metavar = spec.metavar or (None if spec.choices else spec.flag[2:].replace("-", "_").upper())
            kwargs.update(type=_converter(spec), metavar=metavar)
            if spec.choices is not None:
                kwargs["choices"] = spec.choices
        groups[group].add_argument(spec.flag, **kwargs)
    groups["output"].add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _given_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                 args: argparse.Namespace) -> set[str]:
    # Parsing again into a namespace pre-filled with a marker leaves the marker wherever no flag was given.
    probe = parser.parse_args(argv, namespace=argparse.Namespace(**{k: _UNSET for k in vars(args)}))
    flags = {path: spec.flag for path, spec in settings()}
    flags["verbose"] = "--verbose"
    return {flags[k] for k, v in vars(probe).items() if v is not _UNSET}


def build_config(args: argparse.Namespace, given: set[str] | frozenset[str] = frozenset()) -> EvolveConfig:
    """The ``EvolveConfig`` for parsed flags (``given``: the flags typed on the command line)."""
    values = {path: getattr(args, path) for path, _ in settings()}

    def part(prefix: str) -> dict[str, Any]:
        return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix) and "." not in
                k[len(prefix):]}

    ga = part("ga.")
    if "--elite" not in given:
        # The default elite schedule would not fit a population of 5 or less; one the user typed is kept.
        ga["elite"] = default_elite(ga["elite"], ga["population"])
    ray = part("ray.")
    ray["address"] = ray["address"] or None
    validation = ValidationConfig(**part("validation."))
    surrogate = SurrogateOptions(**part("train.surrogate."))
    train = TrialConfig(**part("train."), seed=ga["seed"], surrogate=surrogate)
    cfg = EvolveConfig(ga=GAConfig(**ga), ray=RayConfig(**ray), train=train, validation=validation,
                       explicit=frozenset(given),
                       **{k: v for k, v in values.items() if "." not in k})
    cfg.validate()
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the console script ``yolo-evolve`` calls this."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from evolve.output.console import setup_console

    setup_console(verbose=args.verbose)
    import evolve

    try:
        evolve.run(build_config(args, _given_flags(parser, argv, args)))
    except (ConfigError, HypError, DataError) as exc:
        parser.error(str(exc))
    except RunStopped:
        return 3  # evolve.run has logged why, and how to resume
    except KeyboardInterrupt:
        # evolve.run has logged how to resume when a run folder exists; nothing more to say here.
        return 128 + (received() or signal.SIGINT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
