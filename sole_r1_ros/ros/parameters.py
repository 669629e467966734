"""ROS parameters from the settings schema: declared with descriptors (description, range,
choices, read-only), read back into the settings dataclasses."""

from __future__ import annotations

import sys
from typing import Any, TypeVar

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

from sole_r1_ros.settings.schema import Setting, SettingsGroup, settings_of

G = TypeVar("G", bound=SettingsGroup)

_INT64_MAX = 2**63 - 1


def descriptor(s: Setting) -> ParameterDescriptor:
    """The descriptor a parameter is declared with: its description, range and choices."""
    spec = s.spec
    d = ParameterDescriptor(description=spec.description, read_only=not spec.runtime)
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(repr(c) for c in spec.choices)
    if spec.minimum is not None or spec.maximum is not None:
        if s.type is int:
            lo = int(spec.minimum) if spec.minimum is not None else -_INT64_MAX - 1
            hi = int(spec.maximum) if spec.maximum is not None else _INT64_MAX
            d.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=1)]
        elif s.type is float:
            lo_f = spec.minimum if spec.minimum is not None else -sys.float_info.max
            hi_f = spec.maximum if spec.maximum is not None else sys.float_info.max
            d.floating_point_range = [FloatingPointRange(from_value=float(lo_f), to_value=float(hi_f), step=0.0)]
    return d


def declare_group(node: Node, group: type[G], *, role: str | None = None,
                  defaults: dict[str, Any] | None = None) -> G:
    """Declare every setting of ``group`` on ``node`` and build the group from the values given
    (params file, command line, or the declared default). ``role`` fills ``<role>`` in a
    per-camera prefix; ``defaults`` overrides declared defaults by field name."""
    values: dict[str, Any] = {}
    for s in settings_of(group):
        name = s.name.replace("<role>", role) if role is not None else s.name
        default = (defaults or {}).get(s.field, s.default)
        node.declare_parameter(name, default, descriptor(s))
        values[s.field] = node.get_parameter(name).value
    return group(**values)


__all__ = ["declare_group", "descriptor"]
