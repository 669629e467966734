"""The decoding one ``generate`` call is asked for: the protocol's defaults (its YAML ``generation``
block) with the user's :class:`~sole_r1_ros.settings.groups.DecodingSettings` applied. Every
backend takes it; it is no parameter group of its own."""

from __future__ import annotations

from dataclasses import dataclass

from sole_r1_ros.errors import ConfigError


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings; defaults are the SOLE-R1 release's (sampled, so rewards are stochastic)."""

    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 200
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            raise ConfigError("max_new_tokens must be positive")
        if self.do_sample and self.temperature <= 0:
            raise ConfigError("temperature must be > 0 when sampling")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p must be in (0, 1]")

    @classmethod
    def greedy(cls, max_new_tokens: int = 200) -> GenerationSettings:
        """Deterministic decoding (tests, online/offline equivalence)."""
        return cls(do_sample=False, max_new_tokens=max_new_tokens)


__all__ = ["GenerationSettings"]
