"""Tests for trinity.llm.structured: lenient JSON extraction, forgiving validation, repairs."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from trinity.errors import LLMError, StructuredOutputError
from trinity.llm.base import LLMRequest, LLMResponse, Message
from trinity.llm.structured import (
    MAX_DEPTH,
    MAX_INPUT_CHARS,
    complete_structured,
    extract_json,
    parse_structured,
)

# --------------------------------------------------------------------------------------------
# Models resembling a plan
# --------------------------------------------------------------------------------------------


class StepLike(BaseModel):
    id: str
    tool: str
    args: dict[str, str] = Field(default_factory=dict)


class PlanLike(BaseModel):
    steps: list[StepLike]
    rationale: str
    revision: int = 0
    final: bool = False


class Checklist(BaseModel):
    """Exactly one list field, so a bare top-level list can be wrapped into it."""

    items: list[str]
    note: str = ""


class TwoLists(BaseModel):
    """Two list fields: a bare list is ambiguous and must not be wrapped."""

    first: list[str] = Field(default_factory=list)
    second: list[str] = Field(default_factory=list)


class Wrapped(BaseModel):
    """Has a field named like a typical wrapper key, which must then not be unwrapped."""

    plan: dict[str, int]


PLAN = {
    "steps": [{"id": "s1", "tool": "shell", "args": {"cmd": "ls"}}],
    "rationale": "list files",
    "revision": 2,
    "final": True,
}
PLAN_JSON = json.dumps(PLAN)
EXPECTED_PLAN = PlanLike.model_validate(PLAN)


# --------------------------------------------------------------------------------------------
# extract_json: examples of each malformation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param(f"```json\n{PLAN_JSON}\n```", PLAN, id="json-fence"),
        pytest.param(f"```\n{PLAN_JSON}\n```", PLAN, id="bare-fence"),
        pytest.param(f"```JSON\n{PLAN_JSON}", PLAN, id="unclosed-fence"),
        pytest.param(f"Here is the plan:\n\n{PLAN_JSON}\n\nLet me know!", PLAN, id="prose"),
        pytest.param(f"Sure. ```json\n{PLAN_JSON}\n``` Done.", PLAN, id="prose-and-fence"),
        pytest.param(
            '{"a": [1, 2,], "b": {"c": 3,},}', {"a": [1, 2], "b": {"c": 3}}, id="trailing"
        ),
        pytest.param(
            '{\n  // the answer\n  "a": 1, /* inline */ "b": "http://x/*y*/"\n}',
            {"a": 1, "b": "http://x/*y*/"},
            id="comments-outside-strings",
        ),
        pytest.param(
            '{"ok": True, "bad": False, "none": None}',
            {"ok": True, "bad": False, "none": None},
            id="python-literals",
        ),
        pytest.param(
            "{'title': 'it's done', 'quote': 'say \"hi\"', 'esc': 'a\\'b'}",
            {"title": "it's done", "quote": 'say "hi"', "esc": "a'b"},
            id="single-quotes",
        ),
        pytest.param(
            "{\u201ckey\u201d: \u201cvalue\u201d, \u2018other\u2019: 1}",
            {"key": "value", "other": 1},
            id="smart-quotes",
        ),
        pytest.param('\ufeff{"a": 1}', {"a": 1}, id="bom"),
        pytest.param('\ufeff  Here: {"a": 1}', {"a": 1}, id="bom-and-prose"),
        pytest.param('  \n\t{"a": 1}\n\n  ', {"a": 1}, id="whitespace"),
        pytest.param(
            "{a: 1, b_c: [true, null]}", {"a": 1, "b_c": [True, None]}, id="unquoted-keys"
        ),
        pytest.param(
            '{"text": "line\nbreak"}', {"text": "line\nbreak"}, id="raw-newline-in-string"
        ),
        pytest.param('{"path": "C:\\dir", "x": 1,}', {"path": "C:\\dir", "x": 1}, id="bad-escape"),
        pytest.param(
            '{"s": "a } ] { [ , \\" //"}', {"s": 'a } ] { [ , " //'}, id="brackets-in-string"
        ),
        pytest.param('{"n": -1.5e3, "i": 0, "big": 12345678901234567890}', None, id="numbers"),
    ],
)
def test_extract_json_survives_malformations(reply: str, expected: Any) -> None:
    if expected is None:
        expected = {"n": -1500.0, "i": 0, "big": 12345678901234567890}
    assert extract_json(reply) == expected


def test_several_blocks_prefer_the_first_object_or_array() -> None:
    reply = 'First try: {"a": } oops.\nThen {"b": 1} and also {"c": 2}.'
    assert extract_json(reply) == {"b": 1}


def test_fenced_block_is_preferred_over_an_example_in_prose() -> None:
    reply = 'The format is {"x": 0}.\n```json\n{"y": 1}\n```\n'
    assert extract_json(reply) == {"y": 1}


def test_markdown_brackets_before_the_json_are_skipped() -> None:
    reply = "See [the docs](http://example.com) and [1]: it's simple.\n" + PLAN_JSON
    # [1] is an array: it parses, so extract_json takes it; parse_structured looks further.
    assert extract_json(reply) == [1]
    assert parse_structured(reply, PlanLike) == EXPECTED_PLAN


def test_stray_brace_in_prose_does_not_hide_the_json() -> None:
    assert extract_json('Use { to open a block. {"a": 1}') == {"a": 1}


def test_whole_reply_scalar_is_returned() -> None:
    assert extract_json(" 42 ") == 42
    assert extract_json('"text"') == "text"


def test_no_json_error_message() -> None:
    with pytest.raises(StructuredOutputError, match=r"^no JSON object found in the reply$") as info:
        extract_json("I cannot do that.")
    assert info.value.raw == "I cannot do that."


def test_invalid_json_error_names_line_and_column() -> None:
    reply = 'Plan:\n{"a": 1,\n "b" 2}'
    with pytest.raises(StructuredOutputError) as info:
        extract_json(reply)
    assert str(info.value) == (
        "invalid JSON at line 3 column 6: expected ':' after a property name but found '2'"
    )


def test_unclosed_object_error() -> None:
    with pytest.raises(StructuredOutputError, match=r"line 1 column 1: '\{' is never closed"):
        extract_json('{"a": [1, 2]')


@pytest.mark.parametrize(
    "reply",
    [
        'Plan: {"steps": [{"id": "s1", "tool": "shell"}, {"id": "s2", "tool": "wri',
        '{"steps": [{"id": "s1", "tool": "shell"}, [1, 2], {"id": "s2"',
    ],
)
def test_cut_off_reply_is_reported_not_mined_for_fragments(reply: str) -> None:
    with pytest.raises(StructuredOutputError, match=r"cut off"):
        extract_json(reply)
    with pytest.raises(StructuredOutputError, match=r"cut off"):
        parse_structured(reply, PlanLike)


def test_non_text_reply_is_a_structured_output_error() -> None:
    with pytest.raises(StructuredOutputError, match="not text"):
        extract_json(None)  # type: ignore[arg-type]


def test_nesting_is_capped_without_recursion_error() -> None:
    with pytest.raises(StructuredOutputError, match="nested deeper"):
        extract_json("[" * 100_000)
    deep_but_allowed = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert extract_json("Answer: " + deep_but_allowed + ",") is not None
    too_deep = "x " + "[" * (MAX_DEPTH + 5) + "1," + "]" * (MAX_DEPTH + 5)
    with pytest.raises(StructuredOutputError, match="nested deeper"):
        extract_json(too_deep)


def test_input_beyond_the_cap_is_not_searched() -> None:
    reply = "x" * (MAX_INPUT_CHARS + 10) + '{"a": 1}'
    with pytest.raises(StructuredOutputError, match="only the first"):
        extract_json(reply)


@pytest.mark.parametrize(
    "reply",
    [
        "{" * MAX_INPUT_CHARS,
        "[" + "1," * (MAX_INPUT_CHARS // 2),
        "['" * (MAX_INPUT_CHARS // 2),
        "['\\']" * (MAX_INPUT_CHARS // 5),
        '{"a": "' + "\\" * MAX_INPUT_CHARS,
        "{/*" * (MAX_INPUT_CHARS // 3),
        "```\n{\n" * (MAX_INPUT_CHARS // 6),
        "{“" * (MAX_INPUT_CHARS // 2),
        "[ '" * (MAX_INPUT_CHARS // 3),
        '{"a"' + ":" * MAX_INPUT_CHARS,
    ],
    ids=lambda reply: repr(reply[:6]),
)
def test_pathological_replies_fail_fast(reply: str) -> None:
    started = time.perf_counter()
    with pytest.raises(StructuredOutputError):
        parse_structured(reply, PlanLike)
    assert time.perf_counter() - started < 3.0


# --------------------------------------------------------------------------------------------
# parse_structured: forgiveness and error messages
# --------------------------------------------------------------------------------------------


def test_parse_structured_valid_reply() -> None:
    assert parse_structured(f"```json\n{PLAN_JSON}\n```", PlanLike) == EXPECTED_PLAN


def test_number_where_string_expected_becomes_string() -> None:
    reply = '{"steps": [{"id": 1, "tool": "shell", "args": {"n": 2.5}}], "rationale": 42}'
    plan = parse_structured(reply, PlanLike)
    assert plan.steps[0].id == "1"
    assert plan.steps[0].args == {"n": "2.5"}
    assert plan.rationale == "42"


def test_single_value_where_list_expected_becomes_one_item_list() -> None:
    reply = '{"steps": {"id": "s1", "tool": "shell"}, "rationale": "r"}'
    assert parse_structured(reply, PlanLike).steps == [StepLike(id="s1", tool="shell")]
    assert parse_structured('{"items": "only"}', Checklist).items == ["only"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("yes", True), ("no", False), ("True", True), ("false", False), (" yes ", True)],
)
def test_bool_written_as_text(text: str, expected: bool) -> None:
    reply = json.dumps({"steps": [], "rationale": "r", "final": text})
    assert parse_structured(reply, PlanLike).final is expected


def test_top_level_list_goes_into_the_only_list_field() -> None:
    assert parse_structured('["a", "b",]', Checklist) == Checklist(items=["a", "b"])


def test_top_level_list_is_not_wrapped_when_ambiguous() -> None:
    with pytest.raises(StructuredOutputError, match="valid dictionary"):
        parse_structured('["a"]', TwoLists)


def test_wrapper_object_is_unwrapped() -> None:
    assert parse_structured(json.dumps({"plan": PLAN}), PlanLike) == EXPECTED_PLAN
    assert parse_structured('{"result": ["x"]}', Checklist).items == ["x"]


def test_field_named_like_a_wrapper_is_not_unwrapped() -> None:
    assert parse_structured('{"plan": {"a": 1}}', Wrapped).plan == {"a": 1}


def test_candidate_that_validates_is_chosen() -> None:
    reply = 'Each step looks like {"id": "...", "tool": "..."}.\nThe plan:\n' + PLAN_JSON
    assert parse_structured(reply, PlanLike) == EXPECTED_PLAN


def test_validation_errors_list_each_field_path() -> None:
    reply = '{"steps": [{"id": "s1"}], "revision": "many"}'
    with pytest.raises(StructuredOutputError) as info:
        parse_structured(reply, PlanLike)
    message = str(info.value)
    assert "steps.0.tool: Field required" in message
    assert "rationale: Field required" in message
    assert "revision: Input should be a valid integer" in message
    assert "'many'" in message
    assert info.value.raw == reply


def test_parse_error_is_reported_when_nothing_parses() -> None:
    with pytest.raises(StructuredOutputError, match=r"^invalid JSON at line 1 column 12"):
        parse_structured('{"steps": [}', PlanLike)


# --------------------------------------------------------------------------------------------
# Property-based tests
# --------------------------------------------------------------------------------------------

FRAGMENTS = st.sampled_from(
    [
        "{", "}", "[", "]", '"', "'", "“", "”", "\u2018", "\u2019", ",", ":", "//", "/*", "*/",
        "\\",
        "\n", " ", "```", "```json\n", "\n```", "\ufeff", "true", "True", "None", "null", "1",
        "-2.5e3", "1" * 30, '"steps"', '"rationale"', '"id"', '"tool"', "'it's'", "{}", "[]",
        PLAN_JSON, PLAN_JSON[:25], PLAN_JSON[25:], "\\u12", "\\ud800", "\ud800", "NaN",
    ]
)  # fmt: skip
NOISY_TEXT = st.lists(st.one_of(FRAGMENTS, st.text(max_size=8)), max_size=40).map("".join)
ANY_CHARS = st.text(st.characters(codec=None, exclude_categories=()), max_size=200)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), ANY_CHARS, NOISY_TEXT))
def test_parse_structured_never_raises_anything_else(text: str) -> None:
    try:
        result = parse_structured(text, PlanLike)
    except StructuredOutputError as exc:
        assert str(exc)
        return
    assert isinstance(result, PlanLike)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), ANY_CHARS, NOISY_TEXT))
def test_extract_json_never_raises_anything_else(text: str) -> None:
    try:
        extract_json(text)
    except StructuredOutputError as exc:
        assert str(exc)


def _dumps_with_trailing_commas(value: Any, indent: str = "") -> str:
    """JSON with a comma after the last element of every non-empty object and array."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        parts = [f"{json.dumps(k)}: {_dumps_with_trailing_commas(v)}," for k, v in value.items()]
        return "{" + " ".join(parts) + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[" + " ".join(f"{_dumps_with_trailing_commas(v)}," for v in value) + "]"
    return json.dumps(value)


# Text a reply keeps as it is: NULs and lone surrogates are cleaned out of replies (no store
# takes them), which test_nul_and_lone_surrogates_are_cleaned_from_parsed_replies checks.
KEPT = st.characters(exclude_characters="\x00", exclude_categories=["Cs"])
STEPS = st.builds(
    StepLike,
    id=st.text(KEPT, max_size=10),
    tool=st.text(KEPT, max_size=10),
    args=st.dictionaries(st.text(KEPT, max_size=5), st.text(KEPT, max_size=10), max_size=3),
)
PLANS = st.builds(
    PlanLike,
    steps=st.lists(STEPS, max_size=3),
    rationale=st.text(KEPT, max_size=30),
    revision=st.integers(min_value=-(2**63), max_value=2**63),
    final=st.booleans(),
)
# Prose around the JSON: anything but brackets (a bracket in prose is another candidate).
PROSE = st.text(st.characters(exclude_characters="{}[]"), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=PLANS,
    before=PROSE,
    after=PROSE,
    fence=st.sampled_from(["", "```json\n", "```\n", "\n```JSON\n"]),
    style=st.sampled_from(["compact", "indented", "ascii", "trailing-commas"]),
    padding=st.sampled_from(["", " ", "\n\n", "\t \n"]),
)
def test_model_json_wrapped_in_noise_parses_back_equal(
    plan: PlanLike, before: str, after: str, fence: str, style: str, padding: str
) -> None:
    data = plan.model_dump()
    if style == "compact":
        body = json.dumps(data, ensure_ascii=False)
    elif style == "indented":
        body = json.dumps(data, ensure_ascii=False, indent=2)
    elif style == "ascii":
        body = json.dumps(data)
    else:
        body = _dumps_with_trailing_commas(data)
    closing = "\n```" if fence else ""
    reply = f"{padding}{before}\n{fence}{body}{closing}\n{after}{padding}"
    assert parse_structured(reply, PlanLike) == plan


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=15,
)
JSON_CONTAINERS = st.one_of(
    st.lists(JSON_VALUES, max_size=4), st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4)
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.booleans())
def test_extract_json_round_trips_json_dumps(value: Any, ascii_only: bool) -> None:
    assert extract_json(json.dumps(value, ensure_ascii=ascii_only)) == value


@settings(max_examples=200, deadline=None)
@given(JSON_CONTAINERS)
def test_lenient_parser_round_trips_with_trailing_commas_and_prose(value: Any) -> None:
    # The prose in front and the trailing commas defeat json.loads, so this exercises the
    # scanner and the lenient parser (string escapes, numbers, nesting) on arbitrary values.
    assert extract_json("Result: " + _dumps_with_trailing_commas(value) + " // end") == value


# --------------------------------------------------------------------------------------------
# complete_structured: the repair loop
# --------------------------------------------------------------------------------------------


class FakeProvider:
    """Returns queued replies and records each request (with a snapshot of its messages)."""

    model = "fake:test"

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.requests: list[LLMRequest] = []
        self.snapshots: list[list[Message]] = []

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        self.snapshots.append(list(request.messages))
        text = self.replies.pop(0)
        return LLMResponse(text=text, model=self.model, input_tokens=10, output_tokens=len(text))

    async def aclose(self) -> None:
        return None


def _request() -> LLMRequest:
    return LLMRequest(
        messages=[Message("system", "You plan."), Message("user", "Plan it.")],
        purpose="test.plan",
    )


async def test_malformed_then_valid_returns_model_after_two_calls() -> None:
    provider = FakeProvider('{"steps": [{"id": "s1"}], "rationale": "r"}', PLAN_JSON)
    request = _request()
    result = await complete_structured(provider, request, PlanLike)
    assert result == EXPECTED_PLAN
    assert len(provider.requests) == 2
    first, second = provider.snapshots
    assert len(first) == 2
    assert second[:2] == request.messages
    assert second[2] == Message("assistant", '{"steps": [{"id": "s1"}], "rationale": "r"}')
    assert second[3].role == "user"
    assert "steps.0.tool: Field required" in second[3].content
    assert '"tool"' in second[3].content  # the schema reminder
    # The caller's request is untouched; the provider saw the model's schema.
    assert len(request.messages) == 2
    assert request.json_schema is None
    assert provider.requests[0].json_schema == PlanLike.model_json_schema()


async def test_unparseable_reply_error_is_fed_back() -> None:
    provider = FakeProvider("Sorry, no.", PLAN_JSON)
    assert await complete_structured(provider, _request(), PlanLike) == EXPECTED_PLAN
    assert "no JSON object found in the reply" in provider.snapshots[1][-1].content


async def test_always_malformed_raises_after_one_plus_max_repairs_calls() -> None:
    provider = FakeProvider("nope 1", "nope 2", "nope 3", "never asked")
    with pytest.raises(StructuredOutputError) as info:
        await complete_structured(provider, _request(), PlanLike, max_repairs=2)
    assert len(provider.requests) == 3
    assert info.value.attempts == 3
    assert info.value.raw == "nope 3"
    assert "no JSON object found in the reply" in str(info.value)
    assert len(provider.snapshots[2]) == 2 + 2 * 2  # two repair rounds appended


async def test_no_repairs_means_one_call() -> None:
    provider = FakeProvider("nope", PLAN_JSON)
    with pytest.raises(StructuredOutputError) as info:
        await complete_structured(provider, _request(), PlanLike, max_repairs=0)
    assert len(provider.requests) == 1
    assert info.value.attempts == 1


async def test_check_rejection_is_fed_back() -> None:
    draft = dict(PLAN, rationale="todo")

    def check(plan: PlanLike) -> None:
        if plan.rationale == "todo":
            raise ValueError("the rationale must explain the plan")

    provider = FakeProvider(json.dumps(draft), PLAN_JSON)
    assert await complete_structured(provider, _request(), PlanLike, check=check) == EXPECTED_PLAN
    assert len(provider.requests) == 2
    assert "the rationale must explain the plan" in provider.snapshots[1][-1].content


async def test_check_rejection_every_time_raises() -> None:
    def check(plan: PlanLike) -> None:
        raise ValueError("never good enough")

    provider = FakeProvider(PLAN_JSON, PLAN_JSON)
    with pytest.raises(StructuredOutputError, match="never good enough") as info:
        await complete_structured(provider, _request(), PlanLike, max_repairs=1, check=check)
    assert info.value.attempts == 2


async def test_on_response_sees_every_response() -> None:
    seen: list[LLMResponse] = []
    provider = FakeProvider("bad", "{bad}", PLAN_JSON)
    await complete_structured(provider, _request(), PlanLike, on_response=seen.append)
    assert [response.text for response in seen] == ["bad", "{bad}", PLAN_JSON]


async def test_callers_schema_is_kept() -> None:
    schema = {"type": "object", "title": "custom"}
    request = _request()
    request.json_schema = schema
    provider = FakeProvider(PLAN_JSON)
    await complete_structured(provider, request, PlanLike)
    assert provider.requests[0].json_schema is schema


async def test_provider_errors_propagate() -> None:
    class Failing(FakeProvider):
        async def complete(self, request: LLMRequest) -> LLMResponse:
            raise LLMError("service down", status=503)

    with pytest.raises(LLMError, match="service down") as info:
        await complete_structured(Failing(), _request(), PlanLike)
    assert not isinstance(info.value, StructuredOutputError)


def test_nul_and_lone_surrogates_are_cleaned_from_parsed_replies() -> None:
    reply = '{"steps": [], "rationale": "a\\u0000b \\ud83d c", "revision": 0, "final": false}'
    assert parse_structured(reply, PlanLike).rationale == "ab \ufffd c"


def test_a_reasoning_block_before_the_answer_is_not_the_answer() -> None:
    reply = (
        '<think>\nMaybe {"passed": false, "reason": "draft"}? No, the file is there.\n</think>\n'
        '{"passed": true, "reason": "the file is there"}'
    )
    assert extract_json(reply) == {"passed": True, "reason": "the file is there"}
    # The same tag later in a reply is content, not reasoning.
    later = '{"content": "<think>x</think>"}'
    assert extract_json(later) == {"content": "<think>x</think>"}
