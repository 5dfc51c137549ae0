"""Plan files: every error names the file, the line and the field; short check forms parse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trinity.errors import InputError, PlanFileError
from trinity.plans import PlanFile, load_plan_file, looks_like_plan_file
from trinity.state import Check, Plan, Step, VerificationLevel


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path, **kwargs: int) -> PlanFileError:
    with pytest.raises(PlanFileError) as info:
        load_plan_file(path, **kwargs)
    error = info.value
    assert isinstance(error, InputError)
    assert error.path == str(path)
    assert str(error).startswith(f"{path}:")  # the message starts with the file name
    return error


THREE_STEPS = """\
task: three steps
steps:
  - id: one
    tool: fs.write
    args: {path: a.txt, content: hi}
  - id: two
    tool: fs.read
    args: {path: a.txt}
  - id: three
    tool: shell.run
    args:
      command: cat a.txt
    checks:
      - exit_code: 0
"""


def test_a_valid_plan_parses_to_a_file_plan(tmp_path: Path) -> None:
    parsed = load_plan_file(write(tmp_path, "ok.yaml", THREE_STEPS))
    assert isinstance(parsed, PlanFile)
    assert parsed.task == "three steps"
    assert [s.id for s in parsed.steps] == ["one", "two", "three"]
    assert parsed.steps[2].args == {"command": "cat a.txt"}
    plan = parsed.to_plan()
    assert isinstance(plan, Plan) and plan.source == "file"
    assert all(isinstance(step, Step) for step in plan.steps)
    assert plan.steps[2].checks == [Check(kind="exit_code", code=0)]


# -- syntax errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        # line 5 is indented one space less than its sibling keys
        (
            "task: t\nsteps:\n  - id: a\n    tool: fs.read\n   args: {path: a}\n",
            5,
            "expected <block end>",
        ),
        ("task: t\nsteps:\n\t- id: a\n", 3, "found character '\\t' that cannot start any token"),
        ("task: 'abc\nsteps: []\n", 3, "found unexpected end of stream"),
        ("task: t\nsteps:\n  - id: a\n    args: {path: a\n", 5, "expected ',' or '}'"),
    ],
)
def test_yaml_syntax_error_names_the_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = write(tmp_path, "bad.yaml", text)
    error = refused(path)
    assert error.line == line
    assert str(error).startswith(f"{path}:{line}: invalid YAML: ")
    assert problem in error.detail


def test_json_syntax_error_names_the_line(tmp_path: Path) -> None:
    text = '{\n  "task": "x",\n  "steps": [\n    {"id": "a", "tool": "fs.read",}\n  ]\n}\n'
    path = write(tmp_path, "bad.json", text)
    error = refused(path)
    assert error.line == 4
    assert str(error).startswith(f"{path}:4: invalid JSON: ")
    assert "column" in error.detail


def test_json_schema_error_names_line_and_field(tmp_path: Path) -> None:
    text = (
        '{\n  "steps": [\n    {"id": "a", "tool": "fs.read"},\n'
        '    {"id": "b",\n     "tool": 5}\n  ]\n}\n'
    )
    error = refused(write(tmp_path, "plan.json", text))
    assert error.line == 5
    assert error.detail == "steps[1].tool: Input should be a valid string"


# -- schema errors ---------------------------------------------------------------------------


def test_bad_field_in_the_third_step(tmp_path: Path) -> None:
    text = THREE_STEPS.replace("    args:\n      command: cat a.txt\n", "    args: [cat, a.txt]\n")
    error = refused(write(tmp_path, "plan.yaml", text))
    assert error.line == 11
    assert error.detail == "steps[2].args: Input should be a valid dictionary"


def test_missing_tool_in_the_third_step_points_at_the_step(tmp_path: Path) -> None:
    text = THREE_STEPS.replace("    tool: shell.run\n", "")
    error = refused(write(tmp_path, "plan.yaml", text))
    assert error.line == 9  # "- id: three"
    assert error.detail == "steps[2].tool: Field required"


def test_bad_check_in_the_third_step(tmp_path: Path) -> None:
    text = THREE_STEPS.replace(
        "      - exit_code: 0\n", "      - exit_code: 0\n      - {kind: smell}\n"
    )
    error = refused(write(tmp_path, "plan.yaml", text))
    assert error.line == 15
    assert error.detail.startswith("steps[2].checks[1].kind: Input should be 'file_exists'")


def test_bad_step_id_names_the_pattern(tmp_path: Path) -> None:
    error = refused(write(tmp_path, "plan.yaml", "steps:\n  - id: 'bad id!'\n    tool: fs.read\n"))
    assert error.line == 2
    assert error.detail.startswith("steps[0].id: String should match pattern")


def test_unexpected_extra_key_in_a_step_points_at_the_key(tmp_path: Path) -> None:
    text = THREE_STEPS.replace(
        "    args: {path: a.txt}\n", "    args: {path: a.txt}\n    colour: red\n"
    )
    error = refused(write(tmp_path, "plan.yaml", text))
    assert error.line == 9
    assert error.detail == "steps[1].colour: Extra inputs are not permitted"


def test_unexpected_top_level_key_points_at_the_key(tmp_path: Path) -> None:
    text = "task: t\nowner: me\nsteps:\n  - id: a\n    tool: fs.read\n"
    error = refused(write(tmp_path, "plan.yaml", text))
    assert error.line == 2
    assert error.detail == "owner: Extra inputs are not permitted"


def test_several_errors_say_how_many_more(tmp_path: Path) -> None:
    text = "steps:\n  - id: a\n  - id: b\n"
    error = refused(write(tmp_path, "plan.yaml", text))
    assert error.detail == "steps[0].tool: Field required (and 1 more)"
    assert error.line == 2


def test_duplicate_step_ids_are_refused(tmp_path: Path) -> None:
    text = "steps:\n  - id: a\n    tool: fs.read\n  - id: a\n    tool: fs.list\n"
    error = refused(write(tmp_path, "plan.yaml", text))
    assert error.detail == "steps[1].id: duplicate step id 'a'"
    assert error.line == 4


def test_duplicate_step_id_points_at_the_duplicate(tmp_path: Path) -> None:
    text = (
        "steps:\n"
        "  - id: x\n    tool: fs.read\n"
        "  - id: a\n    tool: fs.read\n"
        "  - id: a\n    tool: fs.list\n"
    )
    error = refused(write(tmp_path, "plan.yaml", text))
    assert error.line == 6


@pytest.mark.parametrize(
    ("check", "kind"),
    [
        ("output_matches: '([a-z'", "output_matches"),
        ("file_matches: {path: a.txt, pattern: 'a(b'}", "file_matches"),
        ("{kind: output_matches, text: '*oops'}", "output_matches"),
    ],
)
def test_bad_regex_in_a_matches_check(tmp_path: Path, check: str, kind: str) -> None:
    text = "steps:\n  - id: a\n    tool: fs.read\n    checks:\n      - exit_code: 0\n"
    text += f"      - {check}\n"
    error = refused(write(tmp_path, "plan.yaml", text))
    assert error.line == 6
    assert error.detail.startswith(f"steps[0].checks[1]: check '{kind}': bad regular expression: ")


def test_check_missing_its_fields_names_them(tmp_path: Path) -> None:
    text = "steps:\n  - id: a\n    tool: fs.read\n    checks:\n      - file_contains: {path: a}\n"
    error = refused(write(tmp_path, "plan.yaml", text))
    assert error.line == 5
    assert error.detail == "steps[0].checks[0]: check 'file_contains' needs text"


def test_unknown_short_check_kind_is_named(tmp_path: Path) -> None:
    text = "steps:\n  - id: a\n    tool: fs.read\n    checks:\n      - output_smells: hi\n"
    error = refused(write(tmp_path, "plan.yaml", text))
    assert error.line == 5
    assert "unknown check kind 'output_smells'" in error.detail
    assert "file_exists" in error.detail  # the valid kinds are listed


def test_unknown_short_check_kind_is_refused_at_its_line(tmp_path: Path) -> None:
    text = "steps:\n  - id: a\n    tool: fs.read\n    checks:\n      - output_smells: hi\n"
    error = refused(write(tmp_path, "plan.yaml", text))
    assert error.line == 5
    assert error.detail.startswith("steps[0].checks[0]")


# -- short check forms -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("file_exists: out.txt", Check(kind="file_exists", path="out.txt")),
        ("exit_code: 0", Check(kind="exit_code", code=0)),
        ("exit_code: 2", Check(kind="exit_code", code=2)),
        ("output_contains: ok", Check(kind="output_contains", text="ok")),
        ("output_matches: '^\\d+$'", Check(kind="output_matches", text="^\\d+$")),
        (
            "file_contains: {path: out.txt, text: hello}",
            Check(kind="file_contains", path="out.txt", text="hello"),
        ),
        (
            "file_matches: {path: out.txt, pattern: 'h.llo'}",
            Check(kind="file_matches", path="out.txt", text="h.llo"),
        ),
        (
            "file_matches: {path: out.txt, text: 'h.llo'}",
            Check(kind="file_matches", path="out.txt", text="h.llo"),
        ),
        ("{kind: exit_code, code: 3}", Check(kind="exit_code", code=3)),
    ],
)
def test_short_check_forms(tmp_path: Path, source: str, expected: Check) -> None:
    text = f"steps:\n  - id: a\n    tool: fs.read\n    checks:\n      - {source}\n"
    parsed = load_plan_file(write(tmp_path, "plan.yaml", text))
    (check,) = parsed.steps[0].checks
    assert check == expected


def test_verification_level_and_rationale(tmp_path: Path) -> None:
    text = "verification: none\nrationale: why\nsteps:\n  - id: a\n    tool: fs.read\n"
    parsed = load_plan_file(write(tmp_path, "plan.yaml", text))
    assert parsed.verification == VerificationLevel.NONE
    assert parsed.to_plan().rationale == "why"
    error = refused(write(tmp_path, "bad.yaml", text.replace("none", "maybe")))
    assert error.line == 1 and error.detail.startswith("verification: Input should be")


# -- the file itself -------------------------------------------------------------------------


def test_size_limit(tmp_path: Path) -> None:
    text = "steps:\n  - id: a\n    tool: fs.read\n"
    path = write(tmp_path, "plan.yaml", text)
    size = len(text.encode())
    assert load_plan_file(path, max_bytes=size).steps[0].id == "a"  # exactly at the limit
    error = refused(path, max_bytes=size - 1)
    assert error.detail == f"file is {size} bytes; the limit is {size - 1}"
    assert error.line is None


def test_non_utf8_file(tmp_path: Path) -> None:
    path = write(tmp_path, "plan.yaml", b"task: caf\xe9\nsteps: []\n")
    error = refused(path)
    assert error.detail == "not UTF-8 text (byte 9)"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    folder = tmp_path / "plans.yaml"
    folder.mkdir()
    error = refused(folder)
    assert error.detail == "is a directory, not a plan file"


def test_missing_file(tmp_path: Path) -> None:
    error = refused(tmp_path / "nope.yaml")
    assert error.detail == "file not found"
    assert str(error) == f"{tmp_path / 'nope.yaml'}: file not found"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "plan.yaml", "steps: []\n")
    path.chmod(0)
    try:
        assert refused(path).detail.startswith("cannot read")
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    error = refused(write(tmp_path, "plan.yaml", text))
    assert error.detail == "file is empty"


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        ("plan.yaml", "- a\n- b\n", "list"),
        ("plan.yaml", "just words\n", "str"),
        ("plan.yaml", "42\n", "int"),
        ("plan.json", "[1, 2]", "list"),
    ],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, name: str, text: str, kind: str) -> None:
    error = refused(write(tmp_path, name, text))
    assert error.detail == f"expected a mapping with 'steps', got {kind}"
    assert error.line == 1


def test_no_steps(tmp_path: Path) -> None:
    error = refused(write(tmp_path, "plan.yaml", "task: t\nsteps: []\n"))
    assert error.line == 2
    assert error.detail.startswith("steps: List should have at least 1 item")
    error = refused(write(tmp_path, "plan2.yaml", "task: t\n"))
    assert error.detail == "steps: Field required"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("plan.yaml", True),
        ("dir/PLAN.YML", True),
        ("  plan.json  ", True),
        ("write a poem", False),
        ("plan.yaml\nand more", False),
        ("plan.toml", False),
    ],
)
def test_looks_like_plan_file(target: str, expected: bool) -> None:
    assert looks_like_plan_file(target) is expected


def test_a_task_that_mentions_a_yaml_file_is_still_a_task(tmp_path: Path) -> None:
    assert not looks_like_plan_file("tidy up settings.yaml")
    assert looks_like_plan_file("missing-plan.yaml")  # one word: a path, even if absent
    spaced = write(tmp_path, "my plan.yaml", "steps: []\n")
    assert looks_like_plan_file(str(spaced))  # a path with a space that exists
