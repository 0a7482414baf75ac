"""Winner validation settings (``ValidationConfig``): which hyps of a finished evolution are trained again,
with how many new seeds and for how many epochs.

Short trials select on noise as much as on merit, so the top hyps of a run and the base hyp are retrained
with seeds no trial used, at full length, and compared by their mean (``evolve.loops.winners``). The
settings change no result of the evolution itself, so a resumed run takes the ones typed on its command.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from evolve.config.fields import check_fields, setting

GROUP = "validation"
EPOCHS_FACTOR = 3  # default validation length: a full-length run, 3x a trial's epochs


@dataclass
class ValidationConfig:
    """How the winners of an evolution are validated (``--validate-top 0`` turns it off)."""

    run_dir: Optional[str] = setting(None, "--validate", "validate the finished evolution in RUN_DIR (no "
                                     "evolution runs); its records are left as they are (default: none)",
                                     metavar="RUN_DIR", optional=True, group=GROUP)
    top: int = setting(3, "--validate-top", "after the last generation, retrain the K best distinct hyps and "
                       "the base hyp with new seeds; 0: no validation", parse=int, low=0, metavar="K",
                       group=GROUP)
    seeds: int = setting(2, "--validate-seeds", "new seeds per validated hyp", parse=int, low=1, metavar="S",
                         group=GROUP)
    epochs: Optional[int] = setting(None, "--validate-epochs", "epochs of a validation run (default: "
                                    f"{EPOCHS_FACTOR}x --epochs)", parse=int, low=1, optional=True,
                                    metavar="E", group=GROUP)

    def __post_init__(self) -> None:
        check_fields(self)

    def epochs_for(self, trial_epochs: int) -> int:
        """The validation length for trials of ``trial_epochs`` epochs."""
        return int(self.epochs) if self.epochs is not None else EPOCHS_FACTOR * int(trial_epochs)
