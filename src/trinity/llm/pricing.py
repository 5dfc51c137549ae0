"""What LLM calls cost: a price table per model, which users extend, for the cost budget.

Prices are US dollars per million tokens, input and output. A table maps model patterns
(``fnmatch`` globs over the model string a run uses, such as ``openai:gpt-4o-mini`` or
``openai-compatible:http://host/v1#llama-3.1-8b``) to prices. User entries (the ``prices``
setting: ``[prices."openai:my-finetune"]`` in ``trinity.toml``) come before the built-in ones;
among the matches of one table an exact name wins, then the longest pattern.

The built-in prices are the providers' published list prices for standard (not batch, not
cached) tokens as of late 2025, written down from memory of their price pages, not fetched. They
change, and a snapshot can differ from its family: set your own when it matters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trinity.config import best_match
from trinity.errors import ConfigError


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: float = Field(ge=0)
    """Dollars per million input (prompt) tokens."""
    output_per_mtok: float = Field(ge=0)
    """Dollars per million output (completion) tokens."""

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


def _p(input_per_mtok: float, output_per_mtok: float) -> Price:
    return Price(input_per_mtok=input_per_mtok, output_per_mtok=output_per_mtok)


BUILTIN_PRICES: dict[str, Price] = {
    "openai:gpt-4o": _p(2.50, 10.00),
    "openai:gpt-4o-2024-*": _p(2.50, 10.00),
    "openai:gpt-4o-2024-05-13": _p(5.00, 15.00),
    "openai:gpt-4o-mini*": _p(0.15, 0.60),
    "openai:gpt-4.1": _p(2.00, 8.00),
    "openai:gpt-4.1-2025-*": _p(2.00, 8.00),
    "openai:gpt-4.1-mini*": _p(0.40, 1.60),
    "openai:gpt-4.1-nano*": _p(0.10, 0.40),
    "openai:o3-mini*": _p(1.10, 4.40),
    "openai:o4-mini*": _p(1.10, 4.40),
    "anthropic:claude-opus-4*": _p(15.00, 75.00),
    "anthropic:claude-opus-4-5*": _p(5.00, 25.00),
    "anthropic:claude-haiku-4-5*": _p(1.00, 5.00),
    "anthropic:claude-sonnet-4*": _p(3.00, 15.00),
    "anthropic:claude-3-7-sonnet*": _p(3.00, 15.00),
    "anthropic:claude-3-5-sonnet*": _p(3.00, 15.00),
    "anthropic:claude-3-5-haiku*": _p(0.80, 4.00),
    "anthropic:claude-3-haiku*": _p(0.25, 1.25),
}


class PriceTable:
    def __init__(self, extra: Mapping[str, Price | Mapping[str, Any]] | None = None) -> None:
        """``extra``: the user's prices, by model pattern; they win over the built-in ones."""
        self.user: dict[str, Price] = {}
        for pattern, value in (extra or {}).items():
            try:
                self.user[pattern] = (
                    value if isinstance(value, Price) else Price.model_validate(value)
                )
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "price"
                raise ConfigError(
                    f"prices: {pattern!r}: {where}: {first['msg']} (give input_per_mtok and "
                    "output_per_mtok, dollars per million tokens)"
                ) from None

    def lookup(self, model: str) -> Price | None:
        """The price of ``model``, or ``None`` when no entry matches."""
        for table in (self.user, BUILTIN_PRICES):
            price = best_match(table, model)
            if price is not None:
                return price
        return None
