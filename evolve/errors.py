"""Errors for bad evolution input (meta/hyp/population YAML, flags, run folders), naming file and key."""


class ConfigError(ValueError):
    """Bad user input to an evolution; the one-line message names the file, key or flag."""
