"""Command line of the hyperparameter evolution: parse flags, build the configuration, call ``evolve.run``.

    python orchestrate.py --generations 300 --population 50 --data my.yaml --gpus-per-trial 1
    python orchestrate.py --mode async --early-stop asha --gpus-per-trial 0.25 --address auto
    python orchestrate.py --resume runs/evolve/exp        # continue a run exactly where it stopped

Exit status: 0 done, 2 bad input (one line on stderr naming the file, key or flag), 130 Ctrl-C (the run
stays resumable).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, Sequence

from detector.errors import DataError, HypError
from evolve.config import (
    EARLY_STOP,
    LANDSCAPES,
    MODES,
    EvolveConfig,
    default_elite,
    surrogate_options,
    trial_train_config,
)
from evolve.errors import ConfigError
from evolve.ga import GAConfig
from evolve.runner import RayConfig

PROG = "orchestrate.py"
_UNSET = object()


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``orchestrate.py: error: ...``, and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _pair(kind: Callable[[str], Any]) -> Callable[[str], tuple[Any, Any]]:
    """START,END (a schedule from the first to the last generation) or one value for the whole run."""

    def parse(text: str) -> tuple[Any, Any]:
        parts = [p.strip() for p in text.split(",")]
        try:
            if len(parts) == 1:
                return kind(parts[0]), kind(parts[0])
            if len(parts) == 2:
                return kind(parts[0]), kind(parts[1])
        except ValueError:
            pass
        raise argparse.ArgumentTypeError(f"expected START,END such as 2,5 (or one value), got {text!r}")

    return parse


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _float_above(low: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > low or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a number > {low:g}, got {text}")
        return value

    return parse


def _imgsz(text: str) -> int:
    value = _int_at_least(32)(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 32, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser; defaults come from the configuration dataclasses so --help shows what runs."""
    ga, ray, train = GAConfig(), RayConfig(), trial_train_config()
    s = surrogate_options()
    p = _Parser(prog=PROG, description="Evolve YOLO hyperparameters with a genetic algorithm over Ray Tune "
                "trials. Outputs go to PROJECT/NAME: evolve.csv, hyp_evolve.yaml, evolve_population.yaml, "
                "evolve.png, fitness.png, checkpoint.pkl.",
                epilog="Train with the result: "
                "python -m detector train --hyp runs/evolve/exp/hyp_evolve.yaml")
    g = p.add_argument_group("evolution")
    g.add_argument("--mode", choices=MODES, default=MODES[0],
                   help="generational: a barrier per generation; async: a steady-state GA that breeds a "
                   "child the moment any trial ends, so no slot waits for the slowest trial "
                   "(default: %(default)s)")
    g.add_argument("--generations", type=_int_at_least(1), default=ga.generations,
                   help="generations to run; with --resume RUN_DIR it may extend the run "
                   "(default: %(default)s)")
    g.add_argument("--population", type=_int_at_least(2), default=ga.population,
                   help="individuals per generation; in async mode the size of the current population "
                   "(default: %(default)s)")
    g.add_argument("--hyp", default=None, help="base hyp YAML, the first seed and the source of frozen keys "
                   "(default: hyps/hyp.scratch-low.yaml)")
    g.add_argument("--meta", default=None, help="search-space YAML: evolve/low/high/scale per key "
                   "(default: hyps/meta.yaml)")
    g.add_argument("--population-dir", default=None, metavar="DIR",
                   help="folder of hyp or population YAMLs added to the seeds of generation 0 "
                   "(default: none)")
    g.add_argument("--resume", default=None, metavar="FILE.yaml|RUN_DIR",
                   help="RUN_DIR: continue that run exactly (its saved settings win, except --generations); "
                   "FILE.yaml: start a new run seeded with that population (default: none)")
    g.add_argument("--seed", type=int, default=ga.seed,
                   help="seed of the GA and of training (default: %(default)s)")
    g.add_argument("--init", choices=("mutants", "random"), default=ga.init,
                   help="rest of generation 0: mutants of the seeds or uniform random (default: %(default)s)")
    g.add_argument("--crossover", choices=("one_point", "uniform", "blend"), default=ga.crossover,
                   help="crossover operator (default: %(default)s)")
    g.add_argument("--mutation", choices=("gaussian", "polynomial"), default=ga.mutation,
                   help="mutation operator (default: %(default)s)")
    g.add_argument("--mutation-sigma", type=float, default=ga.mutation_sigma,
                   help="Gaussian mutation step, in normalised gene units (default: %(default)s)")
    g.add_argument("--init-sigma", type=float, default=ga.init_sigma,
                   help="step of generation 0's mutants around the seeds, in normalised gene units "
                   "(default: %(default)s)")
    g.add_argument("--drift", type=float, default=ga.drift,
                   help="how far each child moves along (mean of the best quarter - mean of the "
                   "generation); 0 turns it off (default: %(default)s)")
    g.add_argument("--bounds", choices=("clip", "reflect"), default=ga.bounds,
                   help="a mutation step past a bound stops on it or comes back in (default: %(default)s)")
    sched = "from the first bred generation to the last"
    g.add_argument("--elite", type=_pair(int), default=ga.elite, metavar="START,END",
                   help=f"elites carried unchanged, {sched}; the default is capped at a quarter of the population "
                   "(default: 2,5)")
    g.add_argument("--tournament", type=_pair(int), default=ga.tournament, metavar="START,END",
                   help=f"tournament size of parent selection, {sched} (default: 10,2)")
    g.add_argument("--crossover-rate", type=_pair(float), default=ga.crossover_rate, metavar="START,END",
                   help=f"probability of crossover per child, {sched} (default: 1.0,0.5)")
    g.add_argument("--mutation-rate", type=_pair(float), default=ga.mutation_rate, metavar="START,END",
                   help=f"per-gene mutation probability, {sched} (default: 0.5,0.01)")

    t = p.add_argument_group("trials")
    t.add_argument("--trainer", default="detector", metavar="detector|surrogate|package.module:function",
                   help="what trains one hyp: the built-in detector, the analytic surrogate, or your own "
                   "function trainer(hyp, cfg, report=None) (default: %(default)s)")
    t.add_argument("--data", default=train.data,
                   help="data YAML (YOLOv5 format) (default: the embedded data set)")
    t.add_argument("--model", choices=("n", "s", "m"), default=train.model,
                   help="model size (default: %(default)s)")
    t.add_argument("--epochs", type=_int_at_least(1), default=train.epochs,
                   help="epochs of every trial (default: %(default)s)")
    t.add_argument("--imgsz", type=_imgsz, default=train.imgsz,
                   help="image size (default: 256 for the embedded data set, else 640)")
    t.add_argument("--batch", type=_int_at_least(1), default=train.batch,
                   help="batch size (default: %(default)s)")
    t.add_argument("--device", default=train.device,
                   help="device of a trial: cpu, 0, cuda:1 "
                   "(default: the trial's GPU if it has one, else cpu)")
    t.add_argument("--workers", type=_int_at_least(0), default=train.workers,
                   help="data-loader workers per trial (default: %(default)s)")
    t.add_argument("--max-images", type=_int_at_least(1), default=train.max_images,
                   help="use only the first N train/val images (default: all)")

    r = p.add_argument_group("Ray")
    r.add_argument("--address", default=ray.address,
                   help="Ray cluster to join: auto or host:port (default: an embedded local Ray)")
    r.add_argument("--cpus-per-trial", type=float, default=ray.cpus_per_trial,
                   help="CPUs reserved per trial (default: %(default)s)")
    r.add_argument("--gpus-per-trial", type=float, default=ray.gpus_per_trial,
                   help="GPUs per trial; fractions pack trials on one GPU (default: %(default)s)")
    r.add_argument("--max-concurrent", type=_int_at_least(1), default=ray.max_concurrent,
                   help="trials running at once (default: as many as the resources allow)")
    r.add_argument("--num-cpus", type=_int_at_least(1), default=ray.num_cpus,
                   help="CPUs of the embedded Ray (default: all of this machine)")
    r.add_argument("--num-gpus", type=_int_at_least(0), default=ray.num_gpus,
                   help="GPUs of the embedded Ray, logical ones allowed (default: those found)")
    r.add_argument("--workers-per-trial", type=_int_at_least(1), default=ray.workers_per_trial,
                   help="run each trial as a DDP job of N CPU processes (gloo); with --gpus-per-trial 2 or "
                   "more a trial has one process per GPU (default: 1 process)")
    r.add_argument("--storage", default=ray.storage, metavar="PATH|URI",
                   help="where Ray Tune keeps its trial records: a shared folder or a URI such as "
                   "s3://bucket/path (default: RUN_DIR/ray)")
    r.add_argument("--early-stop", choices=EARLY_STOP, default=ray.early_stop,
                   help="stop hopeless trials: asha compares per-epoch fitness (validates every epoch); "
                   "a stopped trial is recorded 'stopped' (default: %(default)s)")
    r.add_argument("--grace-epochs", type=_int_at_least(1), default=ray.grace_epochs,
                   help="with --early-stop asha: epochs every trial runs before it may be stopped "
                   "(default: %(default)s)")
    r.add_argument("--reduction-factor", type=_float_above(1.0), default=ray.reduction_factor,
                   help="with --early-stop asha: only 1/F of the trials go on at each rung "
                   "(default: %(default)s)")

    o = p.add_argument_group("output")
    o.add_argument("--project", default="runs/evolve", help="folder of runs (default: %(default)s)")
    o.add_argument("--name", default="exp", help="run name; exp2, exp3 ... when taken (default: %(default)s)")
    o.add_argument("--exist-ok", action="store_true",
                   help="use PROJECT/NAME even if it exists (a run with evolve.csv is refused: use --resume)")
    o.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    su = p.add_argument_group("surrogate trainer (--trainer surrogate)")
    su.add_argument("--surrogate-landscape", choices=LANDSCAPES, default=s["landscape"],
                    help="fitness landscape (default: %(default)s)")
    su.add_argument("--surrogate-seconds", type=float, default=s["seconds"],
                    help="simulated seconds per trial (default: %(default)s)")
    su.add_argument("--surrogate-spread", type=float, default=s["seconds_spread"],
                    help="durations spread over seconds*(1 +/- spread) (default: %(default)s)")
    su.add_argument("--surrogate-failure-rate", type=float, default=s["failure_rate"],
                    help="fraction of hyps whose trial fails (default: %(default)s)")
    su.add_argument("--surrogate-noise", type=float, default=s["noise"],
                    help="fitness noise std of the noisy landscape; 0 uses its default "
                    "(default: %(default)s)")
    return p


def _given_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                 args: argparse.Namespace) -> set[str]:
    # Parsing again into a namespace pre-filled with a marker leaves the marker wherever no flag was given.
    probe = parser.parse_args(argv, namespace=argparse.Namespace(**{k: _UNSET for k in vars(args)}))
    return {"--" + k.replace("_", "-") for k, v in vars(probe).items() if v is not _UNSET}


def build_config(args: argparse.Namespace, given: set[str] | frozenset[str] = frozenset()) -> EvolveConfig:
    """The ``EvolveConfig`` for parsed flags (``given``: the flags typed on the command line)."""
    # The default elite schedule would not fit a population of 5 or less; one the user typed is kept.
    elite = args.elite if "--elite" in given else default_elite(args.elite, args.population)
    ga = GAConfig(population=args.population, generations=args.generations, crossover=args.crossover,
                  mutation=args.mutation, mutation_sigma=args.mutation_sigma, elite=elite,
                  tournament=args.tournament, crossover_rate=args.crossover_rate,
                  mutation_rate=args.mutation_rate, init=args.init, seed=args.seed,
                  init_sigma=args.init_sigma, drift=args.drift, bounds=args.bounds)
    ray = RayConfig(address=args.address or None, cpus_per_trial=args.cpus_per_trial,
                    gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
                    num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                    workers_per_trial=args.workers_per_trial, storage=args.storage,
                    early_stop=args.early_stop, grace_epochs=args.grace_epochs,
                    reduction_factor=args.reduction_factor)
    surrogate = surrogate_options(landscape=args.surrogate_landscape, noise=args.surrogate_noise,
                                  seconds=args.surrogate_seconds, seconds_spread=args.surrogate_spread,
                                  failure_rate=args.surrogate_failure_rate)
    train = trial_train_config(data=args.data, model=args.model, epochs=args.epochs, imgsz=args.imgsz,
                               batch=args.batch, device=args.device, workers=args.workers, seed=args.seed,
                               max_images=args.max_images, extra={"surrogate": surrogate})
    if args.early_stop != "none":
        train.val_every = 1  # early stopping acts on per-epoch fitness
    cfg = EvolveConfig(ga=ga, ray=ray, train=train, mode=args.mode, trainer=args.trainer, hyp=args.hyp,
                       meta=args.meta, population_dir=args.population_dir, resume=args.resume,
                       project=args.project, name=args.name, exist_ok=args.exist_ok,
                       explicit=frozenset(given))
    cfg.validate()
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # On a terminal each log line first erases the progress line that is redrawn in place there.
    erase = "\r\x1b[K" if sys.stderr.isatty() else ""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format=erase + "%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    import evolve

    try:
        evolve.run(build_config(args, _given_flags(parser, argv, args)))
    except (ConfigError, HypError, DataError) as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        # evolve.run has logged how to resume when a run folder exists; nothing more to say here.
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
