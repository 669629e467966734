"""How a checkpoint is asked: prompt templates, composite layout and sampling defaults.

Loaded from a YAML file (``config/prompts/sole_r1.yaml`` is the public checkpoint's) so that
another checkpoint can bring its own wording without code changes.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from sole_r1_ros.core.composite import CompositeLayout
from sole_r1_ros.errors import ConfigError
from sole_r1_ros.settings.generation import GenerationSettings

_ALLOWED_FIELDS = frozenset({"task_description", "prev_progress"})
_USER_KEYS = ("multi_view", "multi_view_from_zero", "single_view", "single_view_from_zero")


class ProtocolError(ConfigError):
    """A prompt/protocol file is missing, malformed or uses unknown placeholders."""


@dataclass(frozen=True)
class PromptTemplates:
    """System prompt and the four user-question variants."""

    system: str
    multi_view: str
    multi_view_from_zero: str
    single_view: str
    single_view_from_zero: str

    def __post_init__(self) -> None:
        for f in fields(self):
            text = getattr(self, f.name)
            if not isinstance(text, str) or not text.strip():
                raise ProtocolError(f"prompt template '{f.name}' must be a non-empty string")
            try:
                names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
            except ValueError as err:
                raise ProtocolError(f"prompt template '{f.name}' is malformed: {err}") from err
            unknown = names - _ALLOWED_FIELDS
            if unknown:
                raise ProtocolError(
                    f"prompt template '{f.name}' uses unknown placeholders {sorted(unknown)}; "
                    f"allowed: {sorted(_ALLOWED_FIELDS)}"
                )

    def user_text(self, goal: str, prev_progress: int | None, *, n_views: int) -> str:
        """The user question; ``prev_progress=None`` selects the "from zero" variant."""
        if n_views < 1:
            raise ValueError("need at least one camera view")
        if prev_progress is None:
            template = self.multi_view_from_zero if n_views > 1 else self.single_view_from_zero
        else:
            template = self.multi_view if n_views > 1 else self.single_view
        return template.format(task_description=goal, prev_progress=prev_progress)

    def messages(self, goal: str, prev_progress: int | None, *, n_views: int) -> list[dict[str, Any]]:
        """Chat messages in the training order: system, then user with the image before the text."""
        return [
            {"role": "system", "content": self.system},
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "text", "text": self.user_text(goal, prev_progress, n_views=n_views)},
                ],
            },
        ]


@dataclass(frozen=True)
class Protocol:
    """Everything checkpoint-specific about asking the model."""

    name: str
    templates: PromptTemplates
    layout: CompositeLayout = field(default_factory=CompositeLayout)
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for logs and summaries)."""
        return asdict(self)


def default_protocol_path() -> Path:
    """The SOLE-R1-8B protocol file, from the source tree or the installed share directory."""
    source_tree = Path(__file__).resolve().parents[2]
    candidates = [source_tree / "config" / "prompts" / "sole_r1.yaml"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("sole_r1_ros")) / "config" / "prompts" / "sole_r1.yaml")
    except Exception:  # noqa: BLE001 - ament index absent or package not installed
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise ProtocolError(f"default protocol file not found; looked in {[str(c) for c in candidates]}")


def load_protocol(path: str | Path | None = None) -> Protocol:
    """Read a protocol YAML file (``None``: the SOLE-R1-8B default)."""
    path = Path(path) if path else default_protocol_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ProtocolError(f"cannot read protocol file {path}: {err}") from err
    except yaml.YAMLError as err:
        raise ProtocolError(f"protocol file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ProtocolError(f"protocol file {path} must hold a mapping")
    user = data.get("user")
    if not isinstance(user, dict) or "system" not in data:
        raise ProtocolError(f"protocol file {path} needs 'system' and a 'user' mapping")
    missing = [k for k in _USER_KEYS if k not in user]
    if missing:
        raise ProtocolError(f"protocol file {path} lacks user templates {missing}")
    templates = PromptTemplates(system=data["system"], **{k: user[k] for k in _USER_KEYS})
    try:
        layout = CompositeLayout(**(data.get("composite") or {}))
        generation = GenerationSettings(**(data.get("generation") or {}))
    except TypeError as err:
        raise ProtocolError(f"protocol file {path}: {err}") from err
    return Protocol(name=str(data.get("name", path.stem)), templates=templates, layout=layout, generation=generation)
