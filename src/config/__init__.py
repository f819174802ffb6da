"""The configuration: every key defined once (:mod:`src.config.keys`), read from YAML and the command line
(:mod:`src.config.loader`). Imports no MindSpore."""
from .keys import (
    DATA,
    KEYS,
    MODEL,
    RESUME_UNCHECKED_KEYS,
    Config,
    config_differences,
    default_of,
    keys_in,
)
from .loader import find_config_file, load_config, read_yaml_config

__all__ = ["DATA", "KEYS", "MODEL", "RESUME_UNCHECKED_KEYS", "Config", "config_differences", "default_of", "keys_in",
           "find_config_file", "load_config", "read_yaml_config"]
