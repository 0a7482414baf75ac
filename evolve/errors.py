"""Errors for bad evolution input (meta/hyp/population YAML, flags, run folders), naming file and key."""


class ConfigError(ValueError):
    """Bad user input to an evolution; the one-line message names the file, key or flag."""


class RunStopped(RuntimeError):
    """The run stopped itself for a cause the user must fix (every trial failing for one reason, a run
    folder that cannot be written); its folder stays resumable and the message says how."""
