"""Configuration of an evolution, one dataclass per concern, at the bottom of the package: it imports
nothing of the search, the loops, execution or output.

- ``GAConfig`` (``ga.py``): population, operators, schedules;
- ``RayConfig`` (``ray.py``): cluster, resources and DDP ranks per trial, early stopping;
- ``TrialConfig`` and ``SurrogateOptions`` (``trial.py``): what every trial trains with;
- ``ValidationConfig`` (``winners.py``): which winners are trained again, with which seeds;
- ``EvolveConfig`` (``run.py``): the run itself and the rules for resuming it;
- ``fields.py``: how a setting declares its flag, help and range once;
- ``argv.py``: the flags generated from those fields, and ``config_from_argv`` (flags -> ``EvolveConfig``).
"""
from evolve.config.argv import config_from_argv
from evolve.config.fields import Flag, setting
from evolve.config.ga import DEFAULT_ELITE, GAConfig, default_elite
from evolve.config.ray import EARLY_STOP, RayConfig, nproc_for
from evolve.config.run import MODES, EvolveConfig, flag_paths, get_setting, resumed_config, settings
from evolve.config.trial import LANDSCAPES, SurrogateOptions, TrialConfig
from evolve.config.winners import ValidationConfig

__all__ = ["DEFAULT_ELITE", "EARLY_STOP", "EvolveConfig", "Flag", "GAConfig", "LANDSCAPES", "MODES",
           "RayConfig", "SurrogateOptions", "TrialConfig", "ValidationConfig", "config_from_argv",
           "default_elite", "flag_paths", "get_setting", "nproc_for", "resumed_config", "settings", "setting"]
