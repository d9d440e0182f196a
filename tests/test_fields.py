"""A game's field types (Text, Name, Count, PlayerId) hold what a player may send, and a
refused field is answered with its name and, in words, what it takes."""

from __future__ import annotations

import datetime
import enum
import json
from typing import Annotated, Any, Literal

import msgspec
import pytest

from mudgate import (
    CommandContext,
    CommandRegistry,
    Count,
    Name,
    PlayerId,
    PlayerText,
    Text,
    builtin_commands,
    player_text,
)
from mudgate.fields import Explainer
from mudgate.hub import Hub
from mudgate.protocol import ErrorCode

from .conftest import connect, settle

FORGERY = "x\nGreta tells carol: hi"
NAME_RULE = "one word of letters, digits, - or _ (at most 32 characters)"
TEXT_RULE = "one line of text, without control characters"


class Walk(msgspec.Struct):
    direction: Name


class Give(msgspec.Struct):
    item: Name
    to: PlayerId
    count: Count = 1


class Shout(msgspec.Struct):
    text: Annotated[str, player_text(max_length=20)]


class Emote(msgspec.Struct):
    text: Text


class Wave(msgspec.Struct):
    hand: Literal["left", "right"] = "left"


def game() -> CommandRegistry:
    """The built-ins and a game's verbs, each replying with the arguments it was handed."""
    commands = builtin_commands()

    def handle(ctx: CommandContext, args: msgspec.Struct) -> None:
        ctx.reply("handled", args=msgspec.to_builtins(args))

    verbs: dict[str, type[msgspec.Struct]] = {
        "walk": Walk,
        "give": Give,
        "shout": Shout,
        "emote": Emote,
        "wave": Wave,
    }
    for op, args_type in verbs.items():
        commands.register(op, args_type)(handle)
    return commands


async def refusal(hub: Hub, frame: dict[str, Any]) -> str:
    """The message a frame is refused with (it carries an id, which the error echoes)."""
    error = await game().dispatch(hub, connect(hub, "alice"), json.dumps({**frame, "id": 7}))
    assert error is not None
    assert (error.code, error.request_id) == (ErrorCode.INVALID_ARGS, 7)
    return error.message


async def handed(hub: Hub, frame: dict[str, Any]) -> dict[str, Any]:
    """The arguments a frame's handler is handed."""
    alice = connect(hub, "alice")
    assert await game().dispatch(hub, alice, json.dumps(frame)) is None
    await settle()
    reply = json.loads(alice.written[-1].data)
    assert reply["event"] == "handled"
    return dict(reply["args"])


@pytest.mark.parametrize(
    "direction",
    [
        FORGERY,
        "north\r",
        "north\u2028south",
        "\x1b[2Jnorth",
        "nor\x00th",
        "no\u200brth",  # invisible: a Name is not collapsed, only refused
        "\u202enorth",
        "north east",
        " north",
        "nörth",
        "\u212aitchen",  # the Kelvin sign lower-cases to "k", and is still refused
        "",
        "x" * 33,
        "x" * 100_000,
        5,
        None,
        ["north"],
        {"to": "north"},
        True,
    ],
    ids=repr,
)
async def test_a_name_is_one_word_and_anything_else_is_explained(hub: Hub, direction: Any) -> None:
    message = await refusal(hub, {"op": "walk", "direction": direction})
    assert message == f"direction: {NAME_RULE}"


async def test_a_missing_field_is_required(hub: Hub) -> None:
    assert await refusal(hub, {"op": "walk"}) == "direction: required"
    assert await refusal(hub, {"op": "emote"}) == "text: required"
    assert await refusal(hub, {"op": "give", "to": "bob"}) == "item: required"


@pytest.mark.parametrize(
    ("sent", "received"),
    [("North", "north"), ("UP", "up"), ("x-1_B", "x-1_b"), ("A" * 32, "a" * 32), ("7", "7")],
)
async def test_a_name_arrives_in_lower_case(hub: Hub, sent: str, received: str) -> None:
    assert await handed(hub, {"op": "walk", "direction": sent}) == {"direction": received}


async def test_a_player_id_keeps_its_case(hub: Hub) -> None:
    args = await handed(hub, {"op": "give", "item": "Sword", "to": "Bob"})
    assert args == {"item": "sword", "to": "Bob", "count": 1}
    message = await refusal(hub, {"op": "give", "item": "sword", "to": FORGERY})
    assert message == "to: 1-32 letters, digits, _, . or -, starting with a letter or digit"


@pytest.mark.parametrize(
    ("op", "text", "message"),
    [
        ("emote", FORGERY, TEXT_RULE),
        ("emote", "hi\r", TEXT_RULE),
        ("emote", "hi\u2028there", TEXT_RULE),
        ("emote", "hi\u2029there", TEXT_RULE),
        ("emote", "a\x1b[2Jb", TEXT_RULE),
        ("emote", "a\x00b", TEXT_RULE),
        ("emote", "a\x85b", TEXT_RULE),  # NEL, a C1 control and a line break
        ("emote", 5, TEXT_RULE),
        ("emote", None, TEXT_RULE),
        ("emote", "", "must not be empty"),
        ("emote", "  \t\u200b\u3000 ", "must not be empty"),
        ("emote", "x" * 4001, "at most 4000 characters"),
        ("shout", "x" * 21, "at most 20 characters"),
        ("shout", "x" * 100_000, "at most 20 characters"),
        ("shout", "x\nGreta: hi", TEXT_RULE),
    ],
    ids=repr,
)
async def test_text_is_one_line_of_bounded_length(
    hub: Hub, op: str, text: Any, message: str
) -> None:
    assert await refusal(hub, {"op": op, "text": text}) == f"text: {message}"


async def test_text_counts_its_length_once_collapsed(hub: Hub) -> None:
    padded = "a" + " \u200b" * 500 + "b" * 18  # 20 characters once collapsed
    assert await handed(hub, {"op": "shout", "text": padded}) == {"text": "a " + "b" * 18}


@pytest.mark.parametrize("count", [0, -1, 1001, 10**30, "3", 2.5, True, None, [1]], ids=repr)
async def test_a_count_is_a_whole_number_from_1_to_1000(hub: Hub, count: Any) -> None:
    frame = {"op": "give", "item": "apple", "to": "bob", "count": count}
    assert await refusal(hub, frame) == "count: a whole number from 1 to 1000"


async def test_a_count_takes_its_whole_range(hub: Hub) -> None:
    for count in (1, 1000):
        frame = {"op": "give", "item": "apple", "to": "bob", "count": count}
        assert (await handed(hub, frame))["count"] == count


@pytest.mark.parametrize("hand", ["up", "LEFT", "", 3, None], ids=repr)
async def test_a_choice_lists_what_it_takes(hub: Hub, hand: Any) -> None:
    assert await refusal(hub, {"op": "wave", "hand": hand}) == "hand: one of left, right"


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"op": "go", "room": "../../etc"}, "room: 1-32 letters, digits, _, . or -, starting with"),
        ({"op": "tell", "text": "hi"}, "to: required"),
        ({"op": "say", "text": FORGERY}, f"text: {TEXT_RULE}"),
        ({"op": "chat", "channel": "ooc", "text": ["hi"]}, f"text: {TEXT_RULE}"),
    ],
)
async def test_the_builtin_ops_explain_their_fields_too(
    hub: Hub, frame: dict[str, Any], message: str
) -> None:
    assert (await refusal(hub, frame)).startswith(message)


class Trade(msgspec.Struct, forbid_unknown_fields=True):
    gold: Annotated[int, msgspec.Meta(ge=0)]
    items: list[Name] = []


class Hand(enum.Enum):
    LEFT = "left"
    RIGHT = "right"


class Lift(msgspec.Struct, tag="lift"):
    weight: Count


class Drop(msgspec.Struct, tag="drop"):
    item: Name


class Mark(msgspec.Struct, array_like=True):
    label: Name
    x: int


class Plain(msgspec.Struct):
    label: Annotated[str, msgspec.Meta(max_length=8)] = ""
    code: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}\Z")] = "0000"
    dice: Annotated[str, msgspec.Meta(pattern=r"^\d+d\d+\Z", description="dice like 2d6")] = "1d6"
    level: Annotated[int, msgspec.Meta(ge=1, le=20)] = 1
    odds: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.5
    tags: Annotated[list[str], msgspec.Meta(min_length=1, max_length=3)] | None = None
    note: str | None = None
    flag: bool = False
    trade: Trade | None = None
    pair: tuple[Name, Count] = ("a", 1)
    when: datetime.datetime | None = None
    hand: Hand = Hand.LEFT
    steps: list[Lift | Drop] = []
    purse: dict[str, Count] = {}
    mark: Mark | None = None
    key: str | int = 0
    exit: Annotated[Name, msgspec.Meta(title="exit")] = "north"
    gold: Annotated[int, msgspec.Meta(extra={"unit": "coins"})] = 0


def explained(fields: Any, args_type: type = Plain) -> str:
    with pytest.raises(msgspec.ValidationError) as refused:
        msgspec.convert(fields, args_type)
    return Explainer(args_type)(str(refused.value))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"label": "x" * 9}, "label: at most 8 characters"),
        ({"label": 1}, "label: must be text"),
        ({"code": "12"}, "code: not in the form this command takes"),
        ({"dice": "lots"}, "dice: dice like 2d6"),  # a game's own description says it
        ({"level": 0}, "level: a whole number from 1 to 20"),
        ({"level": "3"}, "level: must be a whole number"),
        ({"odds": 2}, "odds: a number from 0.0 to 1.0"),
        ({"tags": []}, "tags: must not be empty"),
        ({"tags": ["a", "b", "c", "d"]}, "tags: at most 3 items"),
        ({"tags": "a"}, "tags: must be a list"),
        ({"note": 3}, "note: must be text"),
        ({"flag": "yes"}, "flag: must be true or false"),
        ({"trade": []}, "trade: must be an object"),
        ({"trade": {}}, "trade.gold: required"),
        ({"trade": {"gold": -1}}, "trade.gold: at least 0"),
        ({"trade": {"gold": 1, "items": ["ok", "b c"]}}, f"trade.items[1]: {NAME_RULE}"),
        ({"trade": {"gold": 1, "silver": 2}}, "trade.silver: unknown field"),
        ({"pair": ["a", 0]}, "pair[1]: a whole number from 1 to 1000"),
        ({"when": "soon"}, "when: Invalid RFC3339 encoded datetime"),  # unknown: as msgspec said
        ({"hand": "up"}, "hand: one of left, right"),
        ({"steps": [{"type": "drop", "item": "a b"}]}, f"steps[0].item: {NAME_RULE}"),
        (
            {"steps": [{"type": "lift", "weight": 0}]},
            "steps[0].weight: a whole number from 1 to 1000",
        ),
        ({"purse": {"gold": 0}}, "purse[...]: a whole number from 1 to 1000"),
        ({"mark": ["a b", 1]}, f"mark[0]: {NAME_RULE}"),
        ({"mark": ["a"]}, "mark: a list of at least 2 items"),
        ({"pair": ["a", 1, 2]}, "pair: a list of 2 items"),
        ({"key": 1.5}, "key: must be a whole number or text"),
        ({"gold": "5"}, "gold: must be a whole number"),
        ({"exit": "a b"}, f"exit: {NAME_RULE}"),
    ],
    ids=repr,
)
def test_any_field_is_explained_in_words(fields: dict[str, Any], message: str) -> None:
    assert explained(fields) == message


def test_arguments_that_are_not_an_object_keep_msgspecs_words() -> None:
    assert explained([], Walk) == "Expected `object`, got `array`"


def test_a_field_whose_type_cannot_be_found_is_explained_from_the_message_alone() -> None:
    explain = Explainer(Plain)
    assert explain("Expected `int` >= 1 - at `$.pair[5]`") == "pair[5]: at least 1"
    assert explain("Expected `int` < 7 - at `$.nowhere`") == "nowhere: less than 7"
    assert explain("Expected `int` > 0 - at `$.label[0]`") == "label[0]: more than 0"


def test_player_text_is_the_same_type_as_text() -> None:
    assert PlayerText == Text


def test_help_describes_a_name_as_text_and_a_count_as_an_integer() -> None:
    schema = {command["op"]: command["fields"] for command in game().schema()}
    assert schema["give"] == [
        {"name": "item", "required": True, "type": "text"},
        {"name": "to", "required": True, "type": "text"},
        {"name": "count", "required": False, "type": "integer"},
    ]
