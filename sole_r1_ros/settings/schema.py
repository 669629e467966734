"""The machinery of the settings schema: a setting is a dataclass field with metadata.

Each settings group (:mod:`sole_r1_ros.settings.groups`) is a frozen dataclass whose fields are
declared with :func:`setting`: name, type (the annotation), default, range or choices and a
description, once. From that one declaration come the node's declared ROS parameters (with
descriptors and ranges, :mod:`sole_r1_ros.ros.parameters`), the command-line options
(:mod:`sole_r1_ros.settings.cli`) and validation (:func:`validate`, run by every group's
``__post_init__``).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar, cast

from sole_r1_ros.errors import ConfigError

_META_KEY = "sole_r1_setting"

SettingValue = str | int | float | bool | list[str]


@dataclass(frozen=True)
class SettingSpec:
    """What :func:`setting` records beside a field (the rest comes from the field itself)."""

    description: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    param: str | None = None  # parameter name within the group, when not the field's name
    flag: str | None = None  # command-line flag, when not derived from the parameter name
    offline: bool = True  # offered by the offline CLIs (score_bag, sole-r1-score), not only the node
    runtime: bool = False  # may change while the node runs (otherwise read-only)


def setting(
    default: SettingValue,
    description: str,
    *,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    maximum: float | None = None,
    param: str | None = None,
    flag: str | None = None,
    offline: bool = True,
    runtime: bool = False,
) -> Any:  # noqa: ANN401 - a dataclass field, typed as the value it stands for
    """Declare one setting as a dataclass field (a list default is copied per instance)."""
    spec = SettingSpec(description, choices, minimum, maximum, param, flag, offline, runtime)
    if isinstance(default, list):
        items = list(default)
        return dataclasses.field(default_factory=lambda: list(items), metadata={_META_KEY: spec})
    return dataclasses.field(default=default, metadata={_META_KEY: spec})


@dataclass(frozen=True)
class Setting:
    """One declared setting, resolved: its full parameter name, type and default included."""

    field: str  # the dataclass field
    name: str  # the full ROS parameter name, e.g. "model.path" or "period"
    type: type
    default: SettingValue
    spec: SettingSpec

    @property
    def flag(self) -> str:
        """The command-line flag: declared, or ``--`` + the parameter name in kebab case."""
        return self.spec.flag or "--" + self.name.replace(".", "-").replace("_", "-")

    def check(self, value: object) -> None:
        """Raise :class:`ConfigError` naming the setting when ``value`` is out of its type or range."""
        spec = self.spec
        if not _is_instance(value, self.type):
            raise ConfigError(f"{self.name} must be {self.type.__name__}, got {type(value).__name__} {value!r}")
        if spec.choices and value not in spec.choices:
            raise ConfigError(f"{self.name} '{value}' unknown; choose one of {', '.join(spec.choices)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if spec.minimum is not None and value < spec.minimum:
                raise ConfigError(f"{self.name} must be >= {spec.minimum}, got {value}")
            if spec.maximum is not None and value > spec.maximum:
                raise ConfigError(f"{self.name} must be <= {spec.maximum}, got {value}")


def _is_instance(value: object, kind: type) -> bool:
    if kind is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


class SettingsGroup(Protocol):
    """A settings dataclass: ``PREFIX`` is its parameters' namespace (``""``: top level)."""

    PREFIX: ClassVar[str]
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]


G = TypeVar("G", bound=SettingsGroup)

@functools.cache
def settings_of(group: type[SettingsGroup]) -> tuple[Setting, ...]:
    """The declared settings of a group, in declaration order."""
    hints = typing.get_type_hints(group)
    out = []
    for f in dataclasses.fields(group):
        spec = f.metadata.get(_META_KEY)
        if spec is None:
            continue
        hint = hints[f.name]
        if hint == list[str]:
            kind: type = list
        elif hint in (str, int, float, bool):
            kind = hint
        else:
            raise TypeError(f"{group.__name__}.{f.name}: unsupported setting type {hint}")
        if f.default is not dataclasses.MISSING:
            default: SettingValue = f.default
        else:
            factory = cast("Callable[[], SettingValue]", f.default_factory)
            default = factory()
        name = (group.PREFIX + "." if group.PREFIX else "") + (spec.param or f.name)
        out.append(Setting(f.name, name, kind, default, spec))
    return tuple(out)


def validate(instance: SettingsGroup) -> None:
    """Check every declared setting of ``instance`` (call from ``__post_init__``)."""
    for s in settings_of(type(instance)):
        s.check(getattr(instance, s.field))


def from_parameters(group: type[G], values: Mapping[str, Any]) -> G:
    """Build a group from values keyed by full parameter name (missing ones keep their default);
    ints are accepted where a float is declared (YAML ``1`` for ``1.0``)."""
    kwargs: dict[str, Any] = {}
    for s in settings_of(group):
        if s.name in values:
            value = values[s.name]
            if s.type is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            kwargs[s.field] = value
    return group(**kwargs)


def to_parameters(instance: SettingsGroup) -> dict[str, SettingValue]:
    """The group's values keyed by full parameter name (what a params file would say)."""
    return {s.name: getattr(instance, s.field) for s in settings_of(type(instance))}


__all__ = [
    "Setting",
    "SettingSpec",
    "SettingValue",
    "SettingsGroup",
    "from_parameters",
    "setting",
    "settings_of",
    "to_parameters",
    "validate",
]
