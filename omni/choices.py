"""String choices checked against their ``Literal`` types: the ``Literal`` in a signature or dataclass is the one
list of what is allowed, and the error message is built from it."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal, get_args, get_origin, get_type_hints

__all__ = ["check_choice", "check_literal_fields"]


def check_choice(name: str, value: object, choices: Any) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of the ``Literal`` type ``choices``."""
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, allowed))}, got {value!r}")


@functools.cache
def _literal_fields(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if get_origin(hints[f.name]) is Literal}


def check_literal_fields(obj: Any) -> None:
    """Check every ``Literal``-typed field of a dataclass instance (``TransformerConfig.norm: expected one of...``)."""
    for field, choices in _literal_fields(type(obj)).items():
        check_choice(f"{type(obj).__name__}.{field}", getattr(obj, field), choices)
