"""Player text: padding, invisible characters and bidi controls cannot forge a line, in the
built-in commands and in a game's own verbs declared with the same type."""

from __future__ import annotations

import json
import unicodedata
from typing import Annotated, Any

import msgspec
import pytest

from mudgate import CommandContext, PlayerText, builtin_commands, player_text
from mudgate.hub import Hub
from mudgate.protocol import ErrorCode
from mudgate.text import collapse_whitespace, text_collapser

from .conftest import RecordingConnection, connect, settle

FORGERY = "hi" + " " * 1500 + "bob tells you: the gate code is 1234"


def test_a_run_of_spaces_becomes_one_and_none_is_left_at_the_ends() -> None:
    assert collapse_whitespace(FORGERY) == "hi bob tells you: the gate code is 1234"
    assert collapse_whitespace("   hello   there  ") == "hello there"


@pytest.mark.parametrize(
    "blank",
    # Tab, the Unicode space separators, and letters that print as blanks.
    list("\t\u00a0\u1680\u2000\u2007\u200a\u202f\u205f\u3000\u115f\u1160\u3164\uffa0\u2800"),
)
def test_tabs_unicode_spaces_and_blank_letters_collapse_like_spaces(blank: str) -> None:
    assert collapse_whitespace(f"{blank}hi{blank * 300} {blank}bob{blank}") == "hi bob"


@pytest.mark.parametrize(
    "invisible",
    # Zero-width, then bidirectional controls, then other invisible ones.
    list("\u200b\u200c\u200d\u2060\ufeff\u200e\u200f\u202a\u202b\u202c\u202d\u202e")
    + list("\u2066\u2067\u2068\u2069\u061c\u00ad\u034f\u180e"),
)
def test_zero_width_and_bidi_characters_are_deleted(invisible: str) -> None:
    # Between spaces they would otherwise break a run of padding into runs that survive.
    padded = "hi" + f" {invisible}" * 500 + f"b{invisible}ob"
    assert collapse_whitespace(padded) == "hi bob"


def test_spaces_padded_with_variation_selectors_still_collapse() -> None:
    # The reviewer's case: U+FE0F between the spaces kept all ten of them.
    assert collapse_whitespace("hi" + " \ufe0f" * 10 + "bob") == "hi bob"
    forgery = "hi" + " \ufe0f" * 1500 + "bob tells you: the gate code is 1234"
    assert collapse_whitespace(forgery) == "hi bob tells you: the gate code is 1234"


@pytest.mark.parametrize(
    "invisible",
    # The first and last of each range of Default_Ignorable_Code_Point the first list missed:
    # variation selectors, tags, Mongolian free variation selectors, Khmer inherent vowels,
    # shorthand format controls, musical beams and phrases, and the reserved code points.
    [
        *"\ufe00\ufe0f\U000e0100\U000e01ef",
        *"\U000e0000\U000e0001\U000e0020\U000e007f",
        *"\u180b\u180d\u180f\u17b4\u17b5",
        *"\U0001bca0\U0001bca3\U0001d173\U0001d17a",
        *"\u2065\ufff0\ufff8\U000e0080\U000e00ff\U000e01f0\U000e0fff",
    ],
    ids=lambda character: f"U+{ord(character):04X}",
)
def test_every_default_ignorable_character_is_deleted(invisible: str) -> None:
    padded = "hi" + f" {invisible}" * 500 + f"b{invisible}ob"
    assert collapse_whitespace(padded) == "hi bob"


def test_ascii_hidden_in_tag_characters_is_deleted() -> None:
    hidden = "".join(chr(0xE0000 + ord(character)) for character in "bob tells you: 1234")
    assert collapse_whitespace(f"hi{hidden} there") == "hi there"


# Format characters that Unicode keeps visible, so outside Default_Ignorable_Code_Point
# (DerivedCoreProperties.txt says which): the prepended concatenation marks, the interlinear
# annotation characters and the Egyptian hieroglyph format controls.
VISIBLE_FORMAT_CHARACTERS = {
    *range(0x0600, 0x0606),
    0x06DD,
    0x070F,
    0x0890,
    0x0891,
    0x08E2,
    0x110BD,
    0x110CD,
    *range(0xFFF9, 0xFFFC),
    *range(0x13430, 0x13441),
}


def test_every_invisible_format_character_and_variation_selector_is_deleted() -> None:
    # Against the Unicode version of this Python's unicodedata: a later one that adds an
    # invisible format character fails here until the list in mudgate.text has it.
    kept = [
        f"U+{code_point:04X}"
        for code_point in range(0x110000)
        if (
            (
                unicodedata.category(chr(code_point)) == "Cf"
                and code_point not in VISIBLE_FORMAT_CHARACTERS
            )
            or "VARIATION SELECTOR" in unicodedata.name(chr(code_point), "")
        )
        and collapse_whitespace(f"a{chr(code_point)}b") != "ab"
    ]
    assert kept == [], f"Unicode {unicodedata.unidata_version}"


def test_the_hangul_fillers_are_blanks_not_deleted() -> None:
    # Default ignorable too, but they print as blanks: "b\u3164ob" is not "bob".
    assert collapse_whitespace("hi\u3164\u115f\u1160\uffa0bob") == "hi bob"


def test_a_right_to_left_override_cannot_reorder_what_follows() -> None:
    # After U+202E a page shows ":uoy sllet bob" right to left: "bob tells you:".
    assert collapse_whitespace("hi \u202e:uoy sllet bob") == "hi :uoy sllet bob"


def test_letters_digits_and_punctuation_of_any_script_are_kept() -> None:
    text = "héllo, мир! 你好 — שלום (2 + 2 = 4) 🐉"
    assert collapse_whitespace(text) == text


async def said(hub: Hub, conn: RecordingConnection, frame: dict[str, Any]) -> str:
    assert await builtin_commands().dispatch(hub, conn, json.dumps(frame)) is None
    await settle()
    return str(json.loads(conn.written[-1].data)["text"])


@pytest.mark.parametrize(
    "frame",
    [
        {"op": "say", "text": FORGERY},
        {"op": "tell", "to": "bob", "text": FORGERY},
        {"op": "chat", "channel": "ooc", "text": FORGERY},
    ],
    ids=["say", "tell", "chat"],
)
async def test_every_builtin_op_with_text_collapses_it(hub: Hub, frame: dict[str, Any]) -> None:
    alice = connect(hub, "alice")
    bob = connect(hub, "bob")
    assert (
        await builtin_commands().dispatch(hub, bob, '{"op": "subscribe", "channel": "ooc"}') is None
    )
    assert (
        await builtin_commands().dispatch(hub, alice, '{"op": "subscribe", "channel": "ooc"}')
        is None
    )
    await settle()
    assert await said(hub, alice, frame) == "hi bob tells you: the gate code is 1234"
    assert json.loads(bob.written[-1].data)["text"] == "hi bob tells you: the gate code is 1234"


@pytest.mark.parametrize("text", ["   ", "\t\t", "\u200b\u200b", " \u3000 \u2800 \u202e "])
async def test_a_text_of_only_whitespace_is_refused_as_empty(hub: Hub, text: str) -> None:
    frame = json.dumps({"op": "say", "text": text, "id": 1})
    error = await builtin_commands().dispatch(hub, connect(hub, "alice"), frame)
    assert error is not None
    assert error.code is ErrorCode.INVALID_ARGS
    assert (error.message, error.request_id) == ("text: must not be empty", 1)


@pytest.mark.parametrize("text", ["hi\nbob tells you: x", "hi\r", "hi\u2028bob", "a\x1b[2Jb"])
async def test_line_breaks_and_control_characters_are_still_refused(hub: Hub, text: str) -> None:
    frame = json.dumps({"op": "say", "text": text})
    error = await builtin_commands().dispatch(hub, connect(hub, "alice"), frame)
    assert error is not None
    assert error.code is ErrorCode.INVALID_ARGS
    assert error.message == "text: one line of text, without control characters"


class Emote(msgspec.Struct):
    text: PlayerText


class Shout(msgspec.Struct):
    text: Annotated[str, player_text(max_length=20)]


async def test_a_games_verb_declared_with_player_text_is_collapsed_the_same_way(hub: Hub) -> None:
    commands = builtin_commands()

    @commands.register("emote", Emote)
    def emote(ctx: CommandContext, args: Emote) -> None:
        ctx.broadcast("narrate", text=f"{ctx.player.id} {args.text}")

    @commands.register("shout", Shout)
    def shout(ctx: CommandContext, args: Shout) -> None:
        ctx.broadcast("narrate", text=f"{ctx.player.id} shouts: {args.text}")

    alice = connect(hub, "alice")
    assert await commands.dispatch(hub, alice, json.dumps({"op": "emote", "text": FORGERY})) is None
    await settle()
    narrated = json.loads(alice.written[-1].data)["text"]
    assert narrated == "alice hi bob tells you: the gate code is 1234"
    # The game's own limit counts the collapsed text.
    assert (
        await commands.dispatch(
            hub, alice, json.dumps({"op": "shout", "text": "hi" + " " * 99 + "all"})
        )
        is None
    )
    error = await commands.dispatch(hub, alice, json.dumps({"op": "shout", "text": "x" * 21}))
    assert error is not None
    assert error.message == "text: at most 20 characters"
    assert {"name": "text", "required": True, "type": "text"} in next(
        c["fields"] for c in commands.schema() if c["op"] == "emote"
    )


class Line(msgspec.Struct, tag="line"):
    text: PlayerText


class Pause(msgspec.Struct, tag="pause"):
    text: str  # not a player's text: left as it is


class Mark(msgspec.Struct, array_like=True):
    label: PlayerText
    x: int


class Script(msgspec.Struct):
    title: PlayerText | None = None
    lines: list[PlayerText] = []
    steps: list[Line | Pause] = []
    by_name: dict[str, PlayerText] = {}
    pair: tuple[int, PlayerText] | None = None
    sequel: Script | None = None
    marks: list[Mark] = []
    plain: str = ""


def test_player_text_is_found_wherever_a_struct_holds_it() -> None:
    collapse = text_collapser(Script)
    assert collapse is not None
    padded = "a   b"
    fields = {
        "title": padded,
        "lines": [padded, padded],
        "steps": [{"type": "line", "text": padded}, {"type": "pause", "text": padded}],
        "by_name": {"x": padded},
        "pair": [1, padded],
        "sequel": {"title": padded, "sequel": {"lines": [padded]}},
        "marks": [[padded, 3]],
        "plain": padded,
    }
    script = msgspec.convert(collapse(fields), Script)
    assert script.title == "a b"
    assert script.lines == ["a b", "a b"]
    assert script.steps == [Line("a b"), Pause("a   b")]
    assert script.by_name == {"x": "a b"}
    assert script.pair == (1, "a b")
    assert script.sequel is not None
    assert script.sequel.title == "a b"
    assert script.sequel.sequel is not None
    assert script.sequel.sequel.lines == ["a b"]
    assert script.marks == [Mark("a b", 3)]
    assert script.plain == "a   b"


def test_a_struct_without_player_text_needs_no_collapsing() -> None:
    class Roll(msgspec.Struct):
        dice: str = "1d6"
        times: list[int] = []

    assert text_collapser(Roll) is None


def test_a_value_of_the_wrong_kind_is_left_for_msgspec_to_refuse() -> None:
    collapse = text_collapser(Script)
    assert collapse is not None
    fields = {
        "title": 5,
        "lines": "not a list",
        "steps": [{"type": "line", "text": None}],
        "pair": {"not": "an array"},
        "sequel": [],
    }
    assert collapse(dict(fields)) == fields
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(fields, Script)
