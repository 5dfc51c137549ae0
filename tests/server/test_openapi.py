"""schemathesis against a live ``trinity serve``, from the server's own OpenAPI document: no
5xx, and every response (status, content type, headers, body) as the document says.

The acceptance check (a schema-valid request must be accepted) is left out: a task in words
without a model, or a cursor that is not one the server gave, are refused by rules a JSON
schema cannot state; each such refusal is still checked to be a documented 422 problem."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from server_helpers import Serve, admin_token

ST = shutil.which("st", path=str(Path(sys.executable).parent))
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "use_after_free",
        "ensure_resource_availability",
        "missing_required_header",
        "unsupported_method",
    ]
)


@pytest.mark.skipif(ST is None, reason="LOUD SKIP: schemathesis is not installed (test extra)")
def test_the_api_keeps_its_own_contract(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TRINITY_WORKSPACE": str(tmp_path / "ws"),
        "TRINITY_SANDBOX": "off",
        "TRINITY_API_RATE_LIMITS": json.dumps({"read": "100000/minute", "write": "100000/minute"}),
        "TRINITY_TIMEOUT_S": "5",
    }
    secret = admin_token(tmp_path, env)
    server = Serve(tmp_path, env)
    try:
        done = subprocess.run(
            [
                str(ST),
                "run",
                f"{server.url}/openapi.json",
                "-H",
                f"Authorization: Bearer {secret}",
                "--checks",
                CHECKS,
                "--max-examples",
                "8",
                "--workers",
                "2",
                "--seed",
                "1",
                "--phases",
                "examples,coverage,fuzzing",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stdout[-6000:]
