"""Player text: ``Text``, the one type for free text a player writes (a ``say``, a ``tell``, a
game's ``shout``), and what it may hold once decoded.

A line break in a ``say`` could forge a line of the game's ("bob tells you: ...") in a client
that prints text as it comes; so could "hi" followed by 1,500 spaces, which wraps so that
"bob tells you" starts a line of its own, or a right-to-left override that reorders what a
page shows. So a command field declared ``Text`` (or ``PlayerText``, the same type) is
collapsed before it is checked:

- *Invisible characters are deleted*: Unicode's Default_Ignorable_Code_Point set
  (DerivedCoreProperties.txt of Unicode 14.0, the version of Python 3.11's ``unicodedata``)
  but for the Hangul fillers, which print as blanks and collapse below. That is the
  zero-width characters (U+200B-U+200D, U+2060-U+2064, U+FEFF, U+034F, U+00AD), the
  bidirectional controls (U+200E, U+200F, U+061C, U+202A-U+202E, U+2066-U+206F), the
  variation selectors (U+FE00-U+FE0F, U+E0100-U+E01EF, the Mongolian U+180B-U+180F), the tag
  characters (U+E0000-U+E007F, which can spell ASCII nobody sees), and the rest of the set
  (U+17B4, U+17B5, U+1BCA0-U+1BCA3, U+1D173-U+1D17A, and the code points Unicode reserves as
  ignorable: U+2065, U+FFF0-U+FFF8, U+E0080-U+E0FFF). Any of them between two spaces would
  keep a run of padding from collapsing. This costs emoji joined by U+200D (a family shows as
  its members), the emoji presentation selector U+FE0F (a heart or a keycap may show in its
  text form), the subdivision flags spelled with tags (Scotland's, England's and Wales' show
  as a black flag) and the ZWNJ of Persian script: nothing a player sees may be steered by
  characters they cannot see.
- *Whitespace collapses*: each run of tabs, spaces, the Unicode space separators (U+00A0,
  U+1680, U+2000-U+200A, U+202F, U+205F, U+3000) and the letters that print as blanks (the
  Hangul fillers U+115F, U+1160, U+3164, U+FFA0, and the braille blank U+2800) becomes one
  space, and none is left at either end.
- *Then it is checked*: 1-4000 characters (``player_text(max_length)`` for another limit),
  none of them a control character or a line break, which are refused rather than collapsed.
  Text that was all whitespace is now empty, and refused as empty text always was.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
import msgspec.inspect as schema

__all__ = [
    "PREPARE",
    "TEXT_PATTERN",
    "PlayerText",
    "Text",
    "collapse_whitespace",
    "player_text",
    "text_collapser",
]

# No control characters and no line breaks (U+2028, U+2029 included).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*\Z"

# Default_Ignorable_Code_Point (Unicode 14.0) without the Hangul fillers, which are _BLANKS.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\ufe00-\ufe0f\ufeff\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff]"
)
_BLANKS = re.compile(
    "[\t \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\u115f\u1160\u3164\uffa0\u2800]+"
)

# The key, in a field's ``msgspec.Meta(extra=...)``, of the function a string is passed through
# before msgspec checks it: how Text (collapsed) and fields.Name (lower case) are found.
PREPARE = "mudgate.prepare"


def collapse_whitespace(text: str) -> str:
    """``text`` without invisible characters, each run of whitespace one space, and no
    space at either end (the module docstring lists both sets)."""
    return _BLANKS.sub(" ", _INVISIBLE.sub("", text)).strip(" ")


def player_text(max_length: int = 4000) -> msgspec.Meta:
    """The constraints of ``Text`` with another maximum length, in characters, for a field
    declared ``Annotated[str, player_text(max_length=200)]``; collapsed the same way. Its
    ``description`` is what a player is told when the text has a line break or a control
    character (``mudgate.fields``)."""
    return msgspec.Meta(
        min_length=1,
        max_length=max_length,
        pattern=TEXT_PATTERN,
        description="one line of text, without control characters",
        extra={PREPARE: collapse_whitespace},
    )


Text = Annotated[str, player_text()]
"""Free text a player writes, 1-4000 characters once collapsed (see the module docstring)."""

PlayerText = Text
"""``Text`` by the name it had first, which games use."""


Collapse = Callable[[Any], Any]


def text_collapser(args_type: Any) -> Collapse | None:
    """A function that prepares, in a decoded JSON value meant for ``args_type``, every string
    that type declares with a ``PREPARE`` function (objects and arrays in place): player text
    is collapsed (and a ``fields.Name`` lower-cased), so that msgspec then checks what the
    handler will get; None when the type holds nothing to prepare. Found once per command,
    when it is registered: fields, nested Structs, dataclasses and TypedDicts, optional
    fields, lists, tuples, sets, dict values and (tagged) unions."""
    return _Finder().visit(schema.type_info(args_type))


class _String:
    """A string passed through its field's ``PREPARE`` function."""

    __slots__ = ("prepare",)

    def __init__(self, prepare: Callable[[str], str]) -> None:
        self.prepare = prepare

    def __call__(self, value: Any) -> Any:
        # Anything but a string is left for msgspec to refuse.
        return self.prepare(value) if isinstance(value, str) else value


class _Fields:
    """An object's fields that hold strings to prepare, by their names in JSON."""

    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: dict[str, Collapse] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            for name, collapse in self.fields.items():
                if name in value:
                    value[name] = collapse(value[name])
        return value


class _Positions:
    """An array's positions that hold strings to prepare (a tuple, an array-like Struct)."""

    __slots__ = ("positions",)

    def __init__(self, positions: list[Collapse | None]) -> None:
        self.positions = positions

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            for index, collapse in enumerate(self.positions[: len(value)]):
                if collapse is not None:
                    value[index] = collapse(value[index])
        return value


class _Each:
    """Every item of an array, or every value of an object."""

    __slots__ = ("collapse",)

    def __init__(self, collapse: Collapse) -> None:
        self.collapse = collapse

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            value[:] = [self.collapse(item) for item in value]
        elif isinstance(value, dict):
            for key, item in value.items():
                value[key] = self.collapse(item)
        return value


class _Either:
    """A union: the member a value decodes as, by its JSON kind and, for tagged Structs, its
    tag (msgspec allows one member of each kind otherwise)."""

    __slots__ = ("members",)

    def __init__(self, members: list[tuple[type, str | None, object, Collapse]]) -> None:
        self.members = members

    def __call__(self, value: Any) -> Any:
        for kind, tag_field, tag, collapse in self.members:
            if isinstance(value, kind) and (
                tag_field is None or (isinstance(value, dict) and value.get(tag_field) == tag)
            ):
                return collapse(value)
        return value


_OBJECTS = schema.StructType | schema.DataclassType | schema.TypedDictType
_ARRAYS = schema.ListType | schema.VarTupleType | schema.SetType | schema.FrozenSetType


def _json_kind(info: schema.Type) -> type:
    while isinstance(info, schema.Metadata):
        info = info.type
    if isinstance(info, schema.StrType):
        return str
    if isinstance(info, _OBJECTS | schema.DictType) and not getattr(info, "array_like", False):
        return dict
    return list


def _positions_of(info: schema.Type) -> list[schema.Type] | None:
    """The types of a JSON array's positions: a tuple, a NamedTuple, an array-like Struct."""
    if isinstance(info, schema.TupleType):
        return list(info.item_types)
    if isinstance(info, schema.NamedTupleType) or (
        isinstance(info, schema.StructType) and info.array_like
    ):
        return [field.type for field in info.fields]
    return None


def _item_of(info: schema.Type) -> schema.Type | None:
    """The type of every item of an array, or of every value of an object (a dict)."""
    if isinstance(info, _ARRAYS):
        return info.item_type
    if isinstance(info, schema.DictType):
        return info.value_type
    return None


class _Finder:
    """Walks a type's description once; Structs are remembered, so a recursive one ends."""

    def __init__(self) -> None:
        self._objects: dict[type, Collapse | None] = {}

    def visit(self, info: schema.Type) -> Collapse | None:
        if isinstance(info, schema.Metadata):
            prepare = info.extra.get(PREPARE) if info.extra else None
            return _String(prepare) if prepare is not None else self.visit(info.type)
        if isinstance(info, schema.UnionType):
            return self._union(info)
        if isinstance(info, _OBJECTS) and not getattr(info, "array_like", False):
            return self._object(info)
        if (positions := _positions_of(info)) is not None:
            return self._positions(positions)
        item = _item_of(info)
        return None if item is None else self._each(item)

    def _object(self, info: _OBJECTS) -> Collapse | None:
        if info.cls in self._objects:
            return self._objects[info.cls]
        fields = _Fields()
        self._objects[info.cls] = fields  # a field of this very type finds it here
        for field in info.fields:
            collapse = self.visit(field.type)
            if collapse is not None:
                fields.fields[field.encode_name] = collapse
        if not fields.fields:
            self._objects[info.cls] = None
            return None
        return fields

    def _positions(self, types: list[schema.Type]) -> Collapse | None:
        positions = [self.visit(item) for item in types]
        return _Positions(positions) if any(positions) else None

    def _each(self, item: schema.Type) -> Collapse | None:
        collapse = self.visit(item)
        return None if collapse is None else _Each(collapse)

    def _union(self, info: schema.UnionType) -> Collapse | None:
        members: list[tuple[type, str | None, object, Collapse]] = []
        for member in info.types:
            collapse = self.visit(member)
            if collapse is not None:
                tag_field, tag = getattr(member, "tag_field", None), getattr(member, "tag", None)
                members.append((_json_kind(member), tag_field, tag, collapse))
        return _Either(members) if members else None
