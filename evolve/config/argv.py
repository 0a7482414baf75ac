"""The command line of an evolution as a function: the flag parser generated from the configuration fields,
and ``config_from_argv``, which turns flags into the ``EvolveConfig`` that ``evolve.run`` takes.

    cfg = evolve.config_from_argv(["--trainer", "surrogate", "--generations", "5"])
    evolve.run(cfg)          # the same run as: python orchestrate.py --trainer surrogate --generations 5

Every flag comes from a field (``evolve.config.fields``), so a flag is added by adding a field. Flags
only fill in fields: every policy (the default elite fitted to the population, the trials' seed, an
empty Ray address) is the configuration's own, so a config built in Python runs the same.
Bad flags raise ``ConfigError`` with one line naming the flag; ``orchestrate.py`` prints it and exits 2.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, NoReturn, Optional, Sequence

from evolve.config.fields import Flag
from evolve.config.ga import GAConfig
from evolve.config.ray import RayConfig
from evolve.config.run import EvolveConfig, get_setting, settings
from evolve.config.trial import SurrogateOptions, TrialConfig
from evolve.config.winners import ValidationConfig
from evolve.errors import ConfigError

PROG = "orchestrate.py"
# --help sections, in order, and the section of each part of the configuration.
GROUPS = ("evolution", "trials", "validation", "Ray", "output", "surrogate trainer (--trainer surrogate)")
PART_GROUPS = {"ga": "evolution", "train": "trials", "ray": "Ray"}
# Flags of the command line itself, not of the configuration: they are parsed, never part of a config.
COMMAND_FLAGS = {"verbose": "--verbose"}
_UNSET = object()


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are ``ConfigError`` with a one-line message (``--help`` still exits)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise ConfigError(" ".join(message.split()))


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


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser, generated from the configuration fields; defaults are theirs, so --help shows what runs."""
    p = _Parser(prog=prog, description="Evolve YOLO hyperparameters with a genetic algorithm over Ray Tune "
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
    groups["output"].add_argument("-v", COMMAND_FLAGS["verbose"], action="store_true", help="debug logging")
    return p


def typed_flags(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]],
                args: argparse.Namespace) -> frozenset[str]:
    """The flags given in ``argv`` (as opposed to left at their defaults), by their long names."""
    # Parsing again into a namespace pre-filled with a marker leaves the marker wherever no flag was given.
    probe = parser.parse_args(argv, namespace=argparse.Namespace(**{k: _UNSET for k in vars(args)}))
    flags = {**{path: spec.flag for path, spec in settings()}, **COMMAND_FLAGS}
    return frozenset(flags[k] for k, v in vars(probe).items() if v is not _UNSET)


def config_from_args(args: argparse.Namespace, given: frozenset[str] = frozenset()) -> EvolveConfig:
    """The checked ``EvolveConfig`` of parsed flags; ``given``: the flags typed (``EvolveConfig.explicit``)."""
    values = {path: getattr(args, path) for path, _ in settings()}

    def part(prefix: str) -> dict[str, Any]:
        return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix) and "." not in
                k[len(prefix):]}

    train = TrialConfig(**part("train."), surrogate=SurrogateOptions(**part("train.surrogate.")))
    cfg = EvolveConfig(ga=GAConfig(**part("ga.")), ray=RayConfig(**part("ray.")), train=train,
                       validation=ValidationConfig(**part("validation.")),
                       explicit=frozenset(given) - set(COMMAND_FLAGS.values()),
                       **{k: v for k, v in values.items() if "." not in k})
    cfg.validate()
    return cfg


def parse_argv(argv: Optional[Sequence[str]] = None,
               prog: str = PROG) -> tuple[EvolveConfig, argparse.Namespace]:
    """The config of ``argv`` (default: ``sys.argv[1:]``) and the parsed namespace, which also holds the
    command's own flags (``verbose``). ``ConfigError`` for a bad flag or value; ``--help`` prints and exits."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    return config_from_args(args, typed_flags(parser, argv, args)), args


def config_from_argv(argv: Optional[Sequence[str]] = None) -> EvolveConfig:
    """The ``EvolveConfig`` that ``orchestrate.py ARGV`` would run, checked; ``evolve.run`` takes it.

    Raises ``ConfigError`` (one line naming the flag) for a bad flag or value. The flags typed are kept
    in ``explicit``, which decides what a resumed run may change (``--generations`` extends it).
    ``--verbose`` is accepted and changes nothing here (it sets the command line's logging).
    """
    return parse_argv(argv)[0]
