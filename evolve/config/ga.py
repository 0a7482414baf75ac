"""Settings of the genetic algorithm (``GAConfig``): population, operators and their adaptive schedules.

Each schedule is a pair (value at progress 0, value at the last planned generation); the GA itself is in
``evolve.search.ga``. Every field carries its command-line flag (``evolve.config.fields``).
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Optional

from evolve.config.fields import check_fields, pair, setting
from evolve.errors import ConfigError

CROSSOVERS = ("one_point", "uniform", "blend")
MUTATIONS = ("gaussian", "polynomial")
INITS = ("mutants", "spread", "random")
BOUNDS = ("clip", "reflect")
SCHEDULES = ("elite", "tournament", "crossover_rate", "mutation_rate")
DEFAULT_ELITE = (2, 5)
_SCHED = "from the first bred generation to the last"
# numpy seeds with 0 .. 2**32 - 1 (torch accepts more): every seed of a run, validation's included, fits it
SEED_MAX = 2**32 - 1


@dataclass
class GAConfig:
    """Settings of the GA; each pair is (value at progress 0, value at the last planned generation)."""

    population: int = setting(50, "--population", "individuals per generation; in async mode the size "
                              "of the current population", parse=int, low=2)
    generations: int = setting(300, "--generations", "generations to run; with --resume RUN_DIR it may "
                               "extend the run", parse=int, low=1)
    # blend is ahead of one_point, with or without drift (docs/benchmarks-ga.md)
    crossover: str = setting("blend", "--crossover", "crossover operator", choices=CROSSOVERS)
    mutation: str = setting("gaussian", "--mutation", "mutation operator", choices=MUTATIONS)
    mutation_sigma: float = setting(0.05, "--mutation-sigma", "Gaussian mutation step, in normalised gene "
                                    "units", parse=float, low=0, low_open=True)
    # None: DEFAULT_ELITE capped to the population (elite_schedule); a schedule given here is kept as given
    elite: Optional[tuple[int, int]] = setting(None, "--elite", f"elites carried unchanged, {_SCHED}; each "
                                               "below --population (default: 2,5, at most a quarter of "
                                               "--population)", parse=pair(int), metavar="START,END", low=0,
                                               whole=True, optional=True)
    tournament: tuple[int, int] = setting((10, 2), "--tournament", f"tournament size of parent selection, "
                                          f"{_SCHED}", parse=pair(int), metavar="START,END", low=1,
                                          whole=True)
    crossover_rate: tuple[float, float] = setting((1.0, 0.5), "--crossover-rate", "probability of "
                                                  f"crossover per child, {_SCHED}", parse=pair(float),
                                                  metavar="START,END", low=0, high=1)
    mutation_rate: tuple[float, float] = setting((0.5, 0.01), "--mutation-rate", "per-gene mutation "
                                                 f"probability, {_SCHED}", parse=pair(float),
                                                 metavar="START,END", low=0, high=1)
    init: str = setting("mutants", "--init", "rest of generation 0: mutants of the seeds (spread: at radii from --init-sigma to 4x it) or uniform random",
                        choices=INITS)
    init_sigma: float = setting(0.07, "--init-sigma", "step of generation 0's mutants around the seeds, in "
                                "normalised gene units", parse=float, low=0, low_open=True)
    drift: float = setting(1.5, "--drift", "how far each child moves along (mean of the best quarter - "
                           "mean of the generation); 0 turns it off", parse=float, low=0)
    screen: int = setting(10, "--screen", "candidates bred per child; a model fitted on every evaluated "
                          "genome picks the one to train (1: no screening)", parse=int, low=1)
    covariance: float = setting(0.5, "--covariance", "scale of each child's extra step drawn from the "
                                "covariance of the best quarter (0: off)", parse=float, low=0)
    bounds: str = setting("clip", "--bounds", "a mutation step past a bound stops on it or comes back in",
                          choices=BOUNDS)
    # 1: a noisy trial's lucky draw breeds for about a generation, as in generational mode
    # (docs/benchmarks-ga.md, ablation on the tuning families)
    age: float = setting(1.0, "--age", "async mode: a member of the current population loses its seat "
                         "once age x population children have been bred after it, unless it is one of the "
                         "--elite best (0: the best ever keep their seats)", parse=float, low=0)
    seed: int = setting(0, "--seed", f"seed of the GA and of training, 0 to {SEED_MAX}", parse=int)

    def __post_init__(self) -> None:
        for name in SCHEDULES:
            value = getattr(self, name)
            if value is None and name == "elite":
                continue  # the default, fitted to the population when it is read
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = (value, value)  # a single number holds for the whole run
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag}: expected a start and an end value, got {value!r}")
            setattr(self, name, tuple(value))
        check_fields(self)
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed <= SEED_MAX:
            # A seed numpy or torch refuses would fail every trial, and a resumed run keeps its seed.
            raise ConfigError(f"--seed must be a whole number from 0 to {SEED_MAX} (numpy's seed range), "
                              f"got {self.seed!r}")
        if self.elite is not None and not all(e < self.population for e in self.elite):
            # Every generation needs a bred child; the default is fitted to the population instead.
            raise ConfigError(f"--elite must stay below --population ({self.population}): a generation needs "
                              f"a bred child, got {self.elite[0]},{self.elite[1]}")

    @property
    def elite_schedule(self) -> tuple[int, int]:
        """The elite schedule the GA runs: ``elite`` as given, or the default fitted to the population."""
        return tuple(self.elite) if self.elite is not None else default_elite(self.population)  # type: ignore

    def age_births(self) -> int:
        """``age`` in children bred (at least 1 when ageing is on); 0 when it is off."""
        return max(1, round(self.age * self.population)) if self.age > 0 else 0


def default_elite(population: int) -> tuple[int, int]:
    """The default elite schedule (``DEFAULT_ELITE``) fitted to a population: at most a quarter of it
    (at least 1).

    With more elites than that, a small population breeds one or two new genomes a generation and
    spends the rest of the generation re-listing old ones. Applied only where ``elite`` is left None,
    from the command line and from Python alike; a schedule the user gave is checked as given.
    """
    cap = max(1, population // 4)
    return (min(DEFAULT_ELITE[0], cap), min(DEFAULT_ELITE[1], cap))
