"""Command-line options from the settings schema: the CLIs offer what the node's parameters do."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, TypeVar

from sole_r1_ros.settings.schema import Setting, SettingsGroup, SettingValue, settings_of

G = TypeVar("G", bound=SettingsGroup)


def _dest(s: Setting) -> str:
    return "setting__" + s.name.replace(".", "__")


def add_setting_arguments(parser: argparse.ArgumentParser, group: type[SettingsGroup], *, title: str,
                          defaults: Mapping[str, SettingValue] | None = None,
                          helps: Mapping[str, str] | None = None) -> None:
    """One option per setting of ``group`` that the offline tools offer (``offline=True``).
    ``defaults`` / ``helps`` (by field name) change a tool's default or help text for an option."""
    g = parser.add_argument_group(title)
    for s in settings_of(group):
        if not s.spec.offline:
            continue
        default = (defaults or {}).get(s.field, s.default)
        description = (helps or {}).get(s.field, s.spec.description)
        help_text = description + (f" (default: {default!r})" if s.type is not bool else "")
        kwargs: dict[str, Any] = {"dest": _dest(s), "default": default, "help": help_text}
        if s.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif s.type is list:
            kwargs["nargs"] = "+"
        else:
            kwargs["type"] = s.type
            if not s.spec.choices:
                kwargs["metavar"] = s.name.rsplit(".", 1)[-1].upper()
        if s.spec.choices:
            kwargs["choices"] = s.spec.choices
        g.add_argument(s.flag, **kwargs)


def settings_from_args(group: type[G], args: argparse.Namespace, **overrides: Any) -> G:
    """Build ``group`` from parsed options (settings without an option keep their default)."""
    kwargs = {s.field: getattr(args, _dest(s)) for s in settings_of(group) if hasattr(args, _dest(s))}
    kwargs.update(overrides)
    return group(**kwargs)


__all__ = ["add_setting_arguments", "settings_from_args"]
