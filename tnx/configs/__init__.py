"""Experiment configs: each module exposes get_config(arg: str | None) -> ConfigDict.

Load with `tnx.train.config.load("lm:smoke")` or on the command line with
`--config=lm:smoke --config.train.steps=100` (see tnx.train.config).
"""
