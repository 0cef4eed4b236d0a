"""Installing an attention plan (a set of processors) on a transformer, reversibly and at most one at a time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_PLAN_ATTR = "_udit_attention_plan"


class AttentionPlanHandle:
    """Restores the processors a transformer had before :func:`install_plan`; also a context manager."""

    def __init__(self, transformer: Any, saved: dict) -> None:
        self._transformer, self._saved = transformer, saved

    def remove(self) -> None:
        if self._saved is not None:
            self._transformer.set_attn_processor(self._saved)
            setattr(self._transformer, _PLAN_ATTR, None)
            self._saved = None

    def __enter__(self) -> "AttentionPlanHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def current_plan(transformer: Any) -> str | None:
    """Name of the attention plan applied to ``transformer``, if any."""
    return getattr(transformer, _PLAN_ATTR, None)


def install_plan(transformer: Any, name: str, processors: Mapping[str, Any]) -> AttentionPlanHandle:
    """Set ``processors`` (keyed like ``transformer.attn_processors``) and return the handle that undoes it.

    Refuses to stack plans: two methods rewriting the same attention layers would silently fight.
    """
    existing = current_plan(transformer)
    if existing is not None:
        raise RuntimeError(f"an attention plan ({existing}) is already applied; call its handle's remove() first")
    saved = dict(transformer.attn_processors)
    transformer.set_attn_processor(dict(processors))
    setattr(transformer, _PLAN_ATTR, name)
    return AttentionPlanHandle(transformer, saved)
