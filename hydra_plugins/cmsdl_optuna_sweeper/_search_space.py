"""The search space of an Optuna sweep from Hydra's sweep syntax: `interval(a, b)`, `tag(log, interval(a, b))`,
`tag(int, interval(a, b))`, `choice(...)` and `range(start, stop[, step])` (stop excluded, as in Hydra's basic
sweeper); any other value is a fixed override of every trial.

Imported when a search starts: the leading underscore keeps Hydra's plugin scan, and so Optuna, out of every command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.errors import HydraException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from cmsdl.errors import ConfigError


@dataclass
class SearchSpace:
    """What Optuna samples (key → distribution) and the overrides every trial gets unchanged."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed_by_key: dict[str, str] = field(default_factory=dict)

    @property
    def fixed(self) -> list[str]:
        return list(self.fixed_by_key.values())


def parse_search_space(params: dict[str, Any], arguments: list[str]) -> SearchSpace:
    """The space of `hydra.sweeper.params` (key → sweep expression) and of the command line's overrides; a key of
    both is the command line's."""
    overrides = [f"{key}={value}" for key, value in params.items()]
    space = SearchSpace()
    for override in parse_overrides(overrides) + parse_overrides(arguments):
        key = override.get_key_element()
        space.distributions.pop(key, None)
        space.fixed_by_key.pop(key, None)
        if override.is_sweep_override():
            space.distributions[key] = distribution(override)
        else:
            space.fixed_by_key[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
    return space


def parse_overrides(overrides: list[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise ConfigError(f"hydra.sweeper.params: {str(err).splitlines()[0]}") from None


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override."""
    value = override.value()
    key = override.get_key_element()
    if isinstance(value, IntervalSweep):
        return interval_distribution(key, value)
    if isinstance(value, RangeSweep) and not value.shuffle:
        return range_distribution(key, list(override.sweep_iterator()), value)
    if isinstance(value, (ChoiceSweep, RangeSweep)):  # a shuffled range is a set of choices
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        if not choices:
            raise ConfigError(f"hydra.sweeper.params.{key}: {override.get_value_element_as_str()} has no values")
        return CategoricalDistribution(choices)
    raise ConfigError(f"hydra.sweeper.params.{key}: expected interval(...), tag(log, interval(...)), choice(...) or "
                      f"range(...), got {override.get_value_element_as_str()}")


def interval_distribution(key: str, value: IntervalSweep) -> BaseDistribution:
    low, high, log = value.start, value.end, "log" in value.tags
    if low is None or high is None or not low < high or (log and low <= 0):
        raise ConfigError(f"hydra.sweeper.params.{key}: interval({low}, {high}) must have low < high"
                          + (" and low > 0 (log scale)" if log else ""))
    if "int" in value.tags:
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(float(low), float(high), log=log)


def range_distribution(key: str, values: list[Any], value: RangeSweep) -> BaseDistribution:
    """range(start, stop, step) over the values Hydra's range yields (stop excluded)."""
    if not values:
        raise ConfigError(f"hydra.sweeper.params.{key}: range({value.start}, {value.stop}, {value.step}) is empty")
    if all(isinstance(v, int) for v in values):
        return IntDistribution(min(values), max(values), step=abs(int(value.step))) if len(values) > 1 \
            else CategoricalDistribution(values)
    return CategoricalDistribution([round(float(v), 12) for v in values])
