"""The permission policy of a run whose plan a model writes, when no policy is given and its
commands run unsandboxed (``sandbox = "off"``, or no bubblewrap): a person approves the calls
that delete, change permissions, run other programs from Python, or name a path outside the
workspace. With the sandbox on, the sandbox is the boundary and no default policy applies.

Like every rule on command text it is advisory (``r''m`` slips past a pattern on ``rm``); it
catches what a model writes in good faith or a plain prompt injection, not a determined one.
"""

from __future__ import annotations

from typing import Any

_DELETES = r"(rm|rmdir|shred|dd|mkfs[.\w]*|truncate|chmod|chown)\b"
_OUTSIDE = r"(/|~|\.\.)"

MODEL_PLAN_DEFAULTS: dict[str, Any] = {
    "default": "allow",
    "rules": [
        {
            "tool": "shell.run",
            "args": {"command": rf"re:(^|[\s;&|(`'\"=]){_DELETES}"},
            "action": "ask",
            "reason": "a model-written command that deletes or changes permissions",
        },
        {
            "tool": "shell.run",
            "args": {"command": rf"re:(^|[\s;&|(`'\"=<>]){_OUTSIDE}"},
            "action": "ask",
            "reason": "a model-written command that names a path outside the workspace",
        },
        {
            "tool": "python.run",
            "args": {
                "code": r"re:\b(rmtree|remove|unlink|rmdir|system|subprocess|Popen|chmod|chown)\b"
                rf"|['\"]{_OUTSIDE}"
            },
            "action": "ask",
            "reason": "model-written Python that deletes, runs commands or names a path outside "
            "the workspace",
        },
    ],
}
MODEL_PLAN_DEFAULTS_SOURCE = "the default policy for model-written plans without a sandbox"
