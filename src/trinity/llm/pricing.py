"""What LLM calls cost, for the cost budget: the user's prices first, then ``genai-prices``.

Prices come from `genai-prices <https://github.com/pydantic/genai-prices>`_, a price database
kept up to date upstream (a table written here from memory needed two corrections in its first
month). It knows the ``openai:`` and ``anthropic:`` models, and OpenAI-compatible services by
their URL (OpenRouter, Groq, Together…); it is read from the installed package, never fetched.

User entries (the ``prices`` setting: ``[prices."openai:my-finetune"]`` in ``trinity.toml``),
US dollars per million input and output tokens, come first: keys are ``fnmatch`` globs over the
model string a run uses (``openai:gpt-4o-mini``,
``openai-compatible:http://host/v1#llama-3.1-8b``); an exact name wins, then the longest
pattern. A model neither knows (a local server's) has no price: a run can still use it, but not
with a cost budget.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trinity.config import best_match
from trinity.errors import ConfigError


class Priced(Protocol):
    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """US dollars for one call's tokens."""
        ...


class Price(BaseModel):
    """A price the user set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: float = Field(ge=0)
    """Dollars per million input (prompt) tokens."""
    output_per_mtok: float = Field(ge=0)
    """Dollars per million output (completion) tokens."""

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


@dataclass(frozen=True, slots=True)
class UpstreamPrice:
    """A model ``genai-prices`` knows; its cost is computed there for each call (some prices
    depend on the size of the prompt)."""

    model_ref: str
    provider_id: str | None = None
    provider_api_url: str | None = None

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        from genai_prices import Usage, calc_price

        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        if self.provider_api_url is not None:
            found = calc_price(usage, self.model_ref, provider_api_url=self.provider_api_url)
        else:
            found = calc_price(usage, self.model_ref, provider_id=self.provider_id)
        return float(found.total_price)


@functools.lru_cache(maxsize=256)
def upstream_price(model: str) -> UpstreamPrice | None:
    """The ``genai-prices`` entry for a model string, or ``None`` when it has none."""
    kind, _, rest = model.partition(":")
    if kind in ("openai", "anthropic"):
        price = UpstreamPrice(rest, provider_id=kind)
    elif kind == "openai-compatible":
        url, _, name = rest.partition("#")
        price = UpstreamPrice(name, provider_api_url=url)
    else:
        return None  # scripted models cost nothing, and have no price
    try:
        price.cost(0, 0)
    except LookupError:
        return None
    return price


class PriceTable:
    def __init__(self, extra: Mapping[str, Price | Mapping[str, Any]] | None = None) -> None:
        """``extra``: the user's prices, by model pattern; they win over ``genai-prices``."""
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

    def lookup(self, model: str) -> Priced | None:
        """The price of ``model``, or ``None`` when neither the user nor genai-prices has one."""
        return best_match(self.user, model) or upstream_price(model)
