"""The field types a game declares its commands' arguments with, and what a player is told
when a field is refused.

``Name`` is one word a player names something by (a direction, an item, a monster), ``Count``
a number of things; free text is ``text.Text``. A refused field is answered in a sentence
that names it and says what it takes (``direction: one word of letters, digits, - or _ (at
most 32 characters)``, ``text: at most 200 characters``, ``dice: required``), never with a
regular expression or msgspec's ``Expected ...``: ``Explainer`` turns msgspec's message into
that sentence, for these types and for the common failures of any other.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
import msgspec.inspect as schema

from .text import PREPARE

__all__ = ["Count", "Explainer", "Name"]


def _fold(name: str) -> str:
    # ASCII only: "\u212a" (the Kelvin sign) lower-cases to "k", and is no letter of a Name.
    return name.lower() if name.isascii() else name


Name = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9_-]{1,32}\Z",
        description="one word of letters, digits, - or _ (at most 32 characters)",
        extra={PREPARE: _fold},
    ),
]
"""One word a player names something by: 1-32 ASCII letters, digits, ``-`` or ``_``, lower-cased
before it is checked (``North`` arrives as ``north``), so a handler compares it with its own
lower-case names. Not for a player's id, which keeps the case the player chose (``PlayerId``)."""

Count = Annotated[int, msgspec.Meta(ge=1, le=1000, description="a whole number from 1 to 1000")]
"""How many of something: a whole number from 1 to 1000 (a JSON integer, not a string).
``Annotated[int, msgspec.Meta(ge=1, le=20)]`` for another range is explained as well."""


# msgspec's messages say what failed, then where (" - at `$.field`") unless it was the whole
# object; a wording these do not match is passed on as it is.
_FIELD = re.compile(r"Object (?P<how>missing required|contains unknown) field `(?P<name>.*)`")
_LENGTH = re.compile(r"Expected `(?P<kind>\w+)` of length (?P<op>[<>]=) (?P<limit>\d+)")
_POSITIONS = re.compile(r"Expected `array` of (?P<least>at least )?length (?P<count>\d+), got \d+")
_WRONG_TYPE = re.compile(r"Expected `(?P<expected>[^`]+)`, got `\w+`")
_BOUND = re.compile(r"Expected `(?:int|float)` (?P<op>[<>]=?) (?P<limit>\S+)")
_PATH_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")

_KINDS = {
    "str": "text",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "array": "a list",
    "object": "an object",
}
_UNITS = {"str": "characters", "array": "items", "object": "entries"}
_BOUNDS = {">=": "at least", "<=": "at most", ">": "more than", "<": "less than"}

_OBJECTS = schema.StructType | schema.DataclassType | schema.TypedDictType
_ARRAYS = schema.ListType | schema.VarTupleType | schema.SetType | schema.FrozenSetType


class Explainer:
    """What a player is told when a frame's fields do not fit an op's arguments: ``field:``
    and what that field takes, in words. Built once per command, when it is registered (the
    type's description is read then); called only for a refused frame."""

    __slots__ = ("_root",)

    def __init__(self, args_type: Any) -> None:
        self._root = schema.type_info(args_type)

    def __call__(self, message: str) -> str:
        """The sentence for msgspec's ``message`` (a ``ValidationError``'s text); a failure
        this does not know is left in msgspec's words, after the field's name."""
        what, at, path = message.rpartition(" - at `$")
        what, path = (what, path.removesuffix("`")) if at else (message, "")
        if field := _FIELD.fullmatch(what):
            refusal = "required" if field["how"] == "missing required" else "unknown field"
            return f"{_label(path, field['name'])}: {refusal}"
        if not path:  # the arguments as a whole: not an object
            return what
        info, description = _described(_follow(self._root, path))
        return f"{_label(path)}: {_rule(what, info, description)}"


def _label(path: str, name: str | None = None) -> str:
    """A field as a player reads it: ``direction``, ``items[0]``, ``trade.gold``."""
    label = path.removeprefix(".")
    if name is not None:
        label = f"{label}.{name}" if label else name
    return label


def _rule(what: str, info: schema.Type | None, description: str | None) -> str:
    if length := _LENGTH.fullmatch(what):
        return _length(length["kind"], length["op"], int(length["limit"]))
    if positions := _POSITIONS.fullmatch(what):  # a tuple, an array-like Struct
        return f"a list of {positions['least'] or ''}{positions['count']} items"
    # Any other failure (a wrong type, a pattern, a bound, a choice) is told what the field
    # takes: its description, else its choices, its range or its kind.
    return description if description is not None else _takes(what, info)


def _length(kind: str, op: str, limit: int) -> str:
    unit = _UNITS.get(kind, "")
    if op == "<=":
        return f"at most {limit} {unit}".rstrip()
    return "must not be empty" if limit == 1 else f"at least {limit} {unit}".rstrip()


def _takes(what: str, info: schema.Type | None) -> str:
    if isinstance(info, schema.LiteralType | schema.EnumType):
        return "one of " + ", ".join(str(choice) for choice in _choices(info))
    if wrong := _WRONG_TYPE.fullmatch(what):
        kinds = [_KINDS.get(kind, kind) for kind in wrong["expected"].split(" | ")]
        return "must be " + " or ".join(kind for kind in kinds if kind != "null")
    if bound := _BOUND.fullmatch(what):
        return _range(info) or f"{_BOUNDS[bound['op']]} {bound['limit']}"
    if what.startswith("Expected `str` matching regex"):
        return "not in the form this command takes"
    return what


def _choices(info: schema.LiteralType | schema.EnumType) -> list[Any]:
    if isinstance(info, schema.LiteralType):
        return list(info.values)
    return [member.value for member in info.cls]


def _range(info: schema.Type | None) -> str | None:
    """``a whole number from 1 to 20`` for a field bounded on both sides."""
    if isinstance(info, schema.IntType | schema.FloatType) and None not in (info.ge, info.le):
        kind = "a whole number" if isinstance(info, schema.IntType) else "a number"
        return f"{kind} from {info.ge} to {info.le}"
    return None


def _follow(info: schema.Type | None, path: str) -> schema.Type | None:
    """The type at msgspec's ``path`` (``.trade.items[0]``), or None where it cannot tell."""
    for name, index in _PATH_STEP.findall(path):
        info = _step(_described(info)[0], name, index)
    return info


def _step(info: schema.Type | None, name: str, index: str) -> schema.Type | None:
    if isinstance(info, schema.UnionType):  # the first member the step goes into
        steps = (_step(_described(member)[0], name, index) for member in info.types)
        return next((step for step in steps if step is not None), None)
    if name:
        fields = info.fields if isinstance(info, _OBJECTS) else ()
        return next((field.type for field in fields if field.encode_name == name), None)
    return _item(info, index)


def _item(info: schema.Type | None, index: str) -> schema.Type | None:
    """The type at ``[index]`` of an array, or of every value of a dict (``[...]``)."""
    if isinstance(info, _ARRAYS):
        return info.item_type
    if isinstance(info, schema.DictType):
        return info.value_type
    position = int(index) if index.isdigit() else -1
    if isinstance(info, schema.TupleType):
        types = list(info.item_types)
    elif isinstance(info, schema.NamedTupleType | schema.StructType):  # or an array-like Struct
        types = [field.type for field in info.fields]
    else:
        return None
    return types[position] if 0 <= position < len(types) else None


def _described(info: schema.Type | None) -> tuple[schema.Type | None, str | None]:
    """The type without its metadata (and, if optional, without None), and its description."""
    description = None
    while True:
        if isinstance(info, schema.Metadata):
            if description is None and info.extra_json_schema:
                description = info.extra_json_schema.get("description")
            info = info.type
        elif isinstance(info, schema.UnionType):
            members = [m for m in info.types if not isinstance(m, schema.NoneType)]
            if len(members) != 1:
                return info, description
            info = members[0]
        else:
            return info, description
