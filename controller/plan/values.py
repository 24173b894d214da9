"""Building the planner's pydantic values without validating them again.

The planner builds actions, deferrals and targets from values that are typed already, tens of
thousands per pass on a large host; validation would be most of a pass's cost. (Memory records and
samples are slotted values with their own ``built`` and ``model_copy``: controller.snapshot.Slotted.)
Everything here is pure. ``tests/unit/test_plan_values.py`` holds these equal to pydantic's own
``model_construct`` and ``model_copy``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

_new = object.__new__
# The four slots of every pydantic model, set through their descriptors: ``object.__setattr__``
# would look each one up by name on every call, a third of the cost of ``built``.
_set_values = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
M = TypeVar("M", bound=BaseModel)
# Each class's full set of field names, one set shared by every value ``built`` with all of them:
# building a set of the keys for each of tens of thousands of values a pass was a fifth of the
# cost of ``built``. Safe to share: pydantic only ever adds to a model's fields set (and copies it
# on ``model_copy``), and every name is in it already.
_ALL_FIELDS: dict[type[BaseModel], set[str]] = {}


def _all_fields(cls: type[BaseModel]) -> set[str]:
    names = _ALL_FIELDS.get(cls)
    if names is None:
        names = _ALL_FIELDS[cls] = set(cls.model_fields)
    return names


def built(cls: type[M], values: dict[str, Any]) -> M:
    """``cls.model_construct(**values)`` for ``values`` that name every field of ``cls``.

    The rules build actions, deferrals and targets from values that are typed already, tens of
    thousands per pass on a large host: like ``model_construct`` this skips validation, and it also
    skips ``model_construct``'s per-field loop (defaults, aliases), which was most of its cost.
    ``tests/unit/test_plan_values.py`` holds it equal to ``model_construct``.
    """
    m = _new(cls)
    _set_values(m, values)
    every = _ALL_FIELDS.get(cls) or _all_fields(cls)
    # As many keys as fields: every field named (the contract), the shared set; else the keys given.
    _set_fields_set(m, every if len(values) == len(every) else set(values))
    _set_extra(m, None)
    _set_private(m, None)
    return m


def replaced(m: M, changes: dict[str, Any]) -> M:
    """``m.model_copy(update=changes)`` (a shallow copy with some fields replaced), without the
    generic copy machinery (the policy memo's shared values are rebuilt this way: :func:`rebuilt`)."""
    new = _new(type(m))
    values = dict(m.__dict__)
    values.update(changes)
    _set_values(new, values)
    was, every = m.__pydantic_fields_set__, _ALL_FIELDS.get(type(m)) or _all_fields(type(m))
    # A value with every field set keeps every field set: the shared set (see ``built``).
    _set_fields_set(new, every if len(was) == len(every) else was | changes.keys())
    _set_extra(new, m.__pydantic_extra__)
    _set_private(new, m.__pydantic_private__)
    return new


def rebuilt(m: M, changes: dict[str, Any]) -> M:
    """``m`` with some fields holding other, equal values: unlike :func:`replaced` the fields set
    stay those of ``m`` (an equal value handed out in place of another is not a field set anew)."""
    new = replaced(m, changes)
    _set_fields_set(new, m.__pydantic_fields_set__)
    return new
