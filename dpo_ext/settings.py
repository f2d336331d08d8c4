"""Checks of numeric settings (beta, learning rate, ...) shared by the trainer's config, the scorer and the CLI.

A NaN passes every ``x <= 0`` test, and YAML 1.1 reads ``1e-1`` (no dot) as the *string* "1e-1": both would surface
hours later, as NaN weights or a bare TypeError. Settings are therefore coerced and checked once, where they enter.
"""

import dataclasses
import functools
import math
import types
import typing
from numbers import Integral, Real


class SettingError(ValueError):
    """A setting with a value that cannot be used; the message names the setting and says what it expects."""


def as_number(name: str, value, kind: type = float, *, minimum: float | None = None, strictly_above: bool = False):
    """``value`` as a finite ``kind`` (`float` or `int`), parsing numeric strings; else a `SettingError`.

    Args:
        name (`str`): the setting's name, for the message.
        value: the value as given (a number, or a string read from YAML or a command line).
        kind (`type`): `float` or `int`.
        minimum (`float`, *optional*): the smallest allowed value.
        strictly_above (`bool`): ``value`` must be greater than ``minimum``, not equal to it.
    """
    parsed = value
    if isinstance(value, str):
        try:
            parsed = kind(value.strip())
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise SettingError(f"{name}: expected {expected}, got {value!r}") from None
    if isinstance(parsed, bool) or not isinstance(parsed, Integral if kind is int else Real):
        raise SettingError(f"{name}: expected {'an integer' if kind is int else 'a number'}, got {value!r} "
                           f"({type(value).__name__})")
    parsed = kind(parsed)
    if not math.isfinite(parsed):
        raise SettingError(f"{name}: expected a finite number, got {value!r}")
    if minimum is not None and (parsed < minimum or (strictly_above and parsed == minimum)):
        relation = "greater than" if strictly_above else "at least"
        raise SettingError(f"{name}: must be {relation} {minimum:g}, got {value!r}")
    return parsed


def positive(name: str, value) -> float:
    """A finite number > 0 (beta, a temperature...)."""
    return as_number(name, value, minimum=0.0, strictly_above=True)


@functools.cache
def _numeric_fields(config_class: type) -> tuple[tuple[str, type, bool], ...]:
    """(name, int or float, accepts None) for every int/float field of a dataclass."""
    hints = typing.get_type_hints(config_class)
    fields = []
    for field in dataclasses.fields(config_class):
        hint = hints.get(field.name)
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
            else (hint,)
        numeric = [a for a in args if a in (int, float)]
        if len(numeric) == 1 and set(args) <= {int, float, type(None)}:
            fields.append((field.name, numeric[0], type(None) in args))
    return tuple(fields)


def check_numeric_fields(config) -> None:
    """Coerce numeric strings and refuse non-finite values in every int/float field of a dataclass, in place."""
    for name, kind, optional in _numeric_fields(type(config)):
        value = getattr(config, name)
        if value is None and optional:
            continue
        setattr(config, name, as_number(f"{type(config).__name__}.{name}", value, kind))
