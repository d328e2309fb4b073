"""Worker configuration from a section of the settings (`[market]`, `[orders]`, `[scopes]`
of a config file, or STREAMRISK_MARKET__... in the environment).

`schemas.settings.Settings` keeps those sections as plain tables, because the models that
give them meaning live in the engine (`engine.market_config.MarketRiskConfig`,
`engine.order_config.OrderConfig`, `engine.scope_risk.ScopeConfig`); each processor's
`from_settings` validates its own section here, so a bad value is one readable line that
names the section and the field.

>>> from engine.order_config import OrderConfig
>>> from_section(OrderConfig, {"auto_recover": False}, "orders").auto_recover
False
>>> from_section(OrderConfig, {"no_such_knob": 1}, "orders")
Traceback (most recent call last):
...
ValueError: settings [orders]: no_such_knob: Extra inputs are not permitted
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from schemas.codec import describe_validation_error

T = TypeVar("T")


def from_section(model: type[T], values: Mapping[str, Any], section: str) -> T:
    """`model` (a pydantic model or a dataclass) built from the settings section `section`;
    ValueError with one line naming every bad or unknown field."""
    if dataclasses.is_dataclass(model):  # pydantic ignores unknown fields of a dataclass
        known = {f.name for f in dataclasses.fields(model)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"settings [{section}]: {unknown[0]}: Extra inputs are not "
                             "permitted")
    try:
        return TypeAdapter(model).validate_python(dict(values))
    except ValidationError as exc:
        raise ValueError(f"settings [{section}]: {describe_validation_error(exc)}") from None
