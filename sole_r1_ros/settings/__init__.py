"""User-facing settings, declared once (:mod:`.groups`), with the schema machinery (:mod:`.schema`)
and the command-line options derived from it (:mod:`.cli`)."""

from sole_r1_ros.settings.groups import (
    GROUPS,
    CameraSettings,
    DecodingSettings,
    ModelSettings,
    NodeSettings,
    RewardSettings,
    WorkerSettings,
)
from sole_r1_ros.settings.schema import Setting, from_parameters, settings_of, to_parameters

__all__ = [
    "GROUPS",
    "CameraSettings",
    "DecodingSettings",
    "ModelSettings",
    "NodeSettings",
    "RewardSettings",
    "Setting",
    "WorkerSettings",
    "from_parameters",
    "settings_of",
    "to_parameters",
]
