"""Which keys a pydantic model allows at a given place in the data (for "did you mean" hints)."""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Tag

from topslot.campaign import condition_kind


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _strip(tp: Any) -> tuple[Any, list[Any]]:
    """Annotated[X, meta...] → (X, meta)."""
    metadata: list[Any] = []
    while get_origin(tp) is Annotated:
        tp, *meta = get_args(tp)
        metadata.extend(meta)
    return tp, metadata


def _resolve(tp: Any, node: Any) -> Any:
    """Strip Annotated and pick the union member that fits ``node`` (by condition tag for mappings)."""
    tp, _ = _strip(tp)
    while get_origin(tp) in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        chosen = options[0] if options else None
        if isinstance(node, dict):
            kind = condition_kind(node)
            for option in options:
                inner, meta = _strip(option)
                if _is_model(inner) and (kind is None or any(isinstance(m, Tag) and m.tag == kind for m in meta)):
                    chosen = option
                    if kind is not None:
                        break
        elif isinstance(node, list):
            chosen = next((o for o in options if get_origin(_strip(o)[0]) in (list, tuple, set)), chosen)
        tp, _ = _strip(chosen)
    return tp


def _field(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        if key == (info.alias or name) or key == name:
            return info.annotation
    return None


def model_at(root: Any, data: Any, path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that validates the mapping found at ``path`` in ``data`` (None if not a model);
    ``root`` validates ``data``: a model class or a type built of them (``dict[str, Condition]``)."""
    tp: Any = root
    node = data
    for item in path:
        tp = _resolve(tp, node)
        if _is_model(tp) and isinstance(item, str):
            tp = _field(tp, item)
        elif get_origin(tp) in (list, set) and isinstance(item, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is tuple and isinstance(item, int):
            args = get_args(tp)
            tp = args[min(item, len(args) - 1)] if args else None
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
        if tp is None:
            return None
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    tp = _resolve(tp, node)
    return tp if _is_model(tp) else None


def allowed_keys(model: type[BaseModel]) -> list[str]:
    """The keys a marketer may write for this model (aliases such as ``from``, ``in``, ``not``)."""
    return [info.alias or name for name, info in model.model_fields.items()]
