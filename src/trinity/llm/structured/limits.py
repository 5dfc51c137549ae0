"""Work limits for reading one model reply.

They live apart from the code that enforces them because every layer uses some: the lenient
JSON search (input size, nesting, candidates, tokens), the schema-guided coercion (nesting) and
:func:`~trinity.llm.structured.parse_structured` (values validated). Bounding all work per reply
means a pathological reply cannot stall a run.
"""

from __future__ import annotations

MAX_INPUT_CHARS = 1_000_000
"""Only this many characters of a reply are searched; real structured replies are far smaller."""
MAX_DEPTH = 100
"""Deepest nesting accepted; deeper values are rejected instead of risking deep recursion."""
MAX_CANDIDATES = 64
"""Most places in one reply where a JSON value is tried."""
MAX_TOKENS = 100_000
"""Most tokens the lenient scanner reads for one reply, all candidates together."""
MAX_VALIDATED = 8
"""Most JSON values of one reply that :func:`parse_structured` validates against the model."""
