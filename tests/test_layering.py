"""The layering of docs/developer-guide.md, enforced: a module imports only its own layer and
the layers below it (every import in the source, lazy ones included; ``TYPE_CHECKING`` imports
too, as they are still a dependency of the code's meaning)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "trinity"

LAYERS: list[tuple[str, ...]] = [
    # top to bottom; a module may import its own layer and any lower one
    ("__main__", "__init__", "cli", "server"),
    (
        "runtime",
        "requests",
        "decisions",
        "execution",
        "queries",
        "views",
        "plans",
        "report",
        "performance",
    ),
    ("agents",),
    ("engine",),
    ("llm", "tools", "store", "security", "observability"),
    ("state", "events", "config", "errors", "limits"),
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}

ALLOWED: set[tuple[str, str]] = {
    # documented exceptions (docs/developer-guide.md, "Layout and layering")
    ("state", "security"),  # the nesting cap on step arguments
    ("config", "security"),  # .env and keyring values are registered as secrets
}


def _top(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "trinity" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _layer_of(path: Path) -> str:
    relative = path.relative_to(SRC)
    return relative.parts[0].removesuffix(".py")


def test_imports_point_downward() -> None:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        own = _layer_of(path)
        if own not in LEVEL:
            problems.append(f"{path.relative_to(SRC)}: its layer {own!r} is not in LAYERS")
            continue
        for module in _imports(path):
            target = _top(module)
            if target is None or target == own or target not in LEVEL:
                continue
            if LEVEL[target] < LEVEL[own] and (own, target) not in ALLOWED:
                problems.append(
                    f"{path.relative_to(SRC)} imports {module} (layer {LEVEL[target]} above "
                    f"its {LEVEL[own]})"
                )
    assert not problems, "\n".join(problems)


def test_the_cli_and_the_api_do_not_touch_the_store() -> None:
    """Both faces of the runtime go through its operations and queries."""
    for face in ("cli", "server"):
        for path in sorted((SRC / face).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for forbidden in (".store.list_", ".store.get_run", "store.list_events"):
                assert forbidden not in text, f"{path.relative_to(SRC)} uses {forbidden}"
