"""Errors for bad user input (data sets, labels, hyp files), each naming the file, key or line."""


class DataError(ValueError):
    """A data YAML, image list or label file is malformed; the message names the file (and line)."""


class HypError(ValueError):
    """A hyp YAML is malformed or has an unknown key; the message names the file and key."""
