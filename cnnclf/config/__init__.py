"""The config: every key, its default, its check and its documentation, before any work starts.

Nothing here imports TensorFlow: a bad config fails in milliseconds. One module per decision:

    schema.py        the sections (DataConfig, AugmentConfig, ModelConfig, TrainConfig), Config
    subsections.py   typed mappings inside a section: BackboneConfig, ConvBlock,
                     EarlyStoppingConfig, FineTuneConfig
    checks.py        the field checkers (one-line errors naming the key) and `setting()`
    defaults.py      shorthands (`backbone: NAME`) and implied defaults (what a backbone changes)
    parse.py         raw mapping -> Config: unknown keys, did-you-mean hints, the order of checks
    cross_checks.py  values valid alone that cannot work together
    memory.py        the training-memory estimate that refuses a model too big for the machine
    yaml_io.py       the hardened YAML loader and dumper
    overrides.py     --set section.key=value
    loader.py        load_config: file, relative paths, overrides, validation
    reference.py     dump_config, the commented reference config, schema_keys

Example:
    config = load_config("configs/cats_dogs.yaml", overrides=["train.epochs=3"])
    config.train.epochs  # 3
"""

from cnnclf.config.defaults import Implied, apply_implied_defaults, expand_shorthand
from cnnclf.config.loader import load_config, load_config_explained
from cnnclf.config.memory import estimate_training_memory
from cnnclf.config.overrides import apply_override
from cnnclf.config.parse import parse_config, parse_config_explained
from cnnclf.config.reference import dump_config, implied_comments, reference_yaml, schema_keys
from cnnclf.config.schema import (
    SECTIONS,
    AugmentConfig,
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
    TuneConfig,
)
from cnnclf.config.subsections import (
    BackboneConfig,
    ConvBlock,
    EarlyStoppingConfig,
    FineTuneConfig,
)
from cnnclf.config.yaml_io import (
    MAX_CONFIG_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    read_yaml,
)

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "SECTIONS",
    "AugmentConfig",
    "BackboneConfig",
    "Config",
    "ConvBlock",
    "DataConfig",
    "EarlyStoppingConfig",
    "FineTuneConfig",
    "Implied",
    "ModelConfig",
    "TrainConfig",
    "TuneConfig",
    "apply_implied_defaults",
    "apply_override",
    "dump_config",
    "estimate_training_memory",
    "expand_shorthand",
    "implied_comments",
    "load_config",
    "load_config_explained",
    "parse_config",
    "parse_config_explained",
    "read_yaml",
    "reference_yaml",
    "schema_keys",
]
