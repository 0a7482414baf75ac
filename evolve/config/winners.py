"""Winner validation settings (``ValidationConfig``): which hyps of a finished evolution are trained again
(the top K, M sentinels from across the ranking, the base), with how many new seeds and for how many epochs.

Short trials select on noise as much as on merit, so the top hyps of a run and the base hyp are retrained
with the same new seeds, at full length, and each candidate is judged by its paired difference to the base
(``evolve.loops.winners``). A paired verdict needs at least two seeds, which is checked here, before any
folder or Ray exists. The settings change no result of the evolution itself, so a resumed run takes the
ones typed on its command.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from evolve.config.fields import check_fields, setting
from evolve.errors import ConfigError

GROUP = "validation"
MIN_PAIRED_SEEDS = 2  # a t interval over the seeds' paired differences needs two of them
DEFAULT_SENTINELS = 2  # one near the median, one in the bottom quarter


@dataclass
class ValidationConfig:
    """How the winners of an evolution are validated (``--validate-top 0`` turns it off)."""

    run_dir: Optional[str] = setting(None, "--validate", "validate the finished evolution in RUN_DIR (no "
                                     "evolution runs); its records are left as they are (default: none)",
                                     metavar="RUN_DIR", optional=True, group=GROUP)
    top: int = setting(3, "--validate-top", "after the last generation, retrain the K best distinct hyps and "
                       "the base hyp with new seeds; 0: no validation", parse=int, low=0, metavar="K",
                       group=GROUP)
    sentinels: Optional[int] = setting(None, "--validate-sentinels", "also retrain M hyps from across the "
                                       "ranking (near the median, then lower), so the transfer coefficient "
                                       f"spans it (default: {DEFAULT_SENTINELS}, fewer when the run has fewer "
                                       "hyps below its top K)", parse=int, low=0, optional=True, metavar="M",
                                       group=GROUP)
    seeds: int = setting(3, "--validate-seeds", "new seeds per validated hyp, the same for every hyp: the "
                         "paired verdict's interval is over them (>= 2)", parse=int, low=1, metavar="S",
                         group=GROUP)
    epochs: Optional[int] = setting(None, "--validate-epochs", "epochs of a validation run (default: "
                                    "the target length: --epochs under --fidelity prefix, 3x --epochs under "
                                    "compressed)", parse=int, low=1, optional=True,
                                    metavar="E", group=GROUP)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.seeds < MIN_PAIRED_SEEDS and (self.top > 0 or self.run_dir):
            # One seed gives a difference but no spread: the verdict's interval would be undefined.
            raise ConfigError(f"--validate-seeds {self.seeds}: the paired verdict against the base hyp needs "
                              f"at least {MIN_PAIRED_SEEDS} seeds for its 95% interval (or --validate-top 0 "
                              "for no validation)")

    @property
    def sentinels_wanted(self) -> int:
        """The sentinels to validate when the run has hyps enough: those asked for, else the default."""
        return DEFAULT_SENTINELS if self.sentinels is None else int(self.sentinels)

    def check_sentinels(self, population: int, generations: int) -> None:
        """ConfigError when the sentinels asked for (not the default) cannot all exist: an evolution of
        ``population`` x ``generations`` trials has at most one hyp per trial, the base among them, and the
        top K come first."""
        if self.top == 0 or self.sentinels is None or self.run_dir:
            return
        most = population * generations - 1
        left = max(0, most - self.top)
        if self.sentinels > left:
            raise ConfigError(f"--validate-sentinels {self.sentinels}: an evolution of at most "
                              f"{population * generations} trials (--population {population} x --generations "
                              f"{generations}) has at most {most} hyp(s) besides the base, "
                              f"{'all' if left == 0 else f'{self.top} of them'} taken by --validate-top "
                              f"{self.top}; give --validate-sentinels {left} or fewer")
