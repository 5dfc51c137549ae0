"""Security services: secrets and their redaction, the child environment."""

from trinity.security.env import child_environment, register_environment
from trinity.security.secrets import REDACTED, SECRETS, SecretRegistry, redact, redact_data

__all__ = [
    "REDACTED",
    "SECRETS",
    "SecretRegistry",
    "child_environment",
    "redact",
    "redact_data",
    "register_environment",
]
