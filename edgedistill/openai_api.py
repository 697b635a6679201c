"""The one way to call an OpenAI-compatible API: OpenAI itself, or a local vLLM, Ollama or LiteLLM
proxy at `base_url` (the verifier, and the API speech and image generators, all go through here).

- The key comes from the environment or a Prefect Secret block (edgedistill/secrets.py); it is
  never logged, written, or part of a cache key.
- Retries on 429, 5xx and timeouts are the `openai` client's own: exponential backoff that honours
  `retry-after`. What is still wrong after them becomes an EdgedistillError that says what to do.
- Every answer is cached in the dataset (`api-cache/`) by a hash of what determines the request, so
  a rerun, or a run resumed after a crash, asks nothing twice and costs nothing.
- Each answer records its tokens and, at the model's prices, its cost; a stage plans how many
  requests its budget (`max_requests`, `max_cost`) affords before it asks any.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from edgedistill.dataset import Dataset, Store, VersionInfo
from edgedistill.errors import EdgedistillError
from edgedistill.recipe import ApiSettings
from edgedistill.secrets import secret

logger = logging.getLogger(__name__)
Parsed = TypeVar("Parsed", bound=BaseModel)
Item = TypeVar("Item")
Result = TypeVar("Result")

CACHE = "api-cache"
CHAT, SPEECH, IMAGES = "chat/completions", "audio/speech", "images/generations"  # the endpoints, in cache keys
OPENAI = "https://api.openai.com/v1"
# list prices in USD per million input and output units: tokens for chat models, characters of text for
# speech (gpt-4o-mini-tts at about $0.015 a minute of audio), images for image models; `price_input` and
# `price_output` set others
PRICES = {"gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.00), "gpt-4.1-nano": (0.10, 0.40),
          "gpt-4.1-mini": (0.40, 1.60), "gpt-4.1": (2.00, 8.00),
          "tts-1": (15.0, 0.0), "tts-1-hd": (30.0, 0.0), "gpt-4o-mini-tts": (15.0, 0.0),
          "gpt-image-1": (11_000.0, 0.0), "dall-e-3": (40_000.0, 0.0)}  # images: a 1024 px one at low/standard
ANSWER_TRIES = 3  # a server that answers something other than the JSON asked for gets this many tries


@dataclass
class Usage:
    """What some requests cost: asked now, or answered from the cache (free)."""

    asked: int = 0
    from_cache: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    characters: int = 0  # of text turned into speech
    cost: float | None = 0.0  # USD of the requests asked; None when the model's prices are unknown

    def add(self, other: Usage) -> Usage:
        cost = None if self.cost is None or other.cost is None else self.cost + other.cost
        return Usage(self.asked + other.asked, self.from_cache + other.from_cache,
                     self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens,
                     self.characters + other.characters, cost)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Budgeted:
    """Which of a stage's requests a run asks (indices into them): those answered before are free, and
    of the new ones, the first the budget affords; the rest are left."""

    cached: list[int]
    asked: list[int]
    left: list[int]

    @property
    def chosen(self) -> set[int]:
        return set(self.cached) | set(self.asked)


@dataclass
class Answer:
    content: dict[str, Any]  # the parsed JSON the model answered
    usage: Usage = field(default_factory=Usage)


class ApiClient:
    """An OpenAI-compatible API for one model, with its cache in a dataset's store."""

    def __init__(self, settings: ApiSettings) -> None:
        import openai

        self.settings = settings
        self.base_url = (settings.base_url or OPENAI).rstrip("/")
        key = secret(settings.api_key_env, settings.secret_block)
        if not key:
            raise EdgedistillError(
                f"no API key for {self.base_url}: the environment variable {settings.api_key_env} is not set",
                f"export {settings.api_key_env}, or store the key in a Prefect Secret block named "
                f"'{settings.secret_block}'; a local server that needs none takes any value")
        self._client = openai.OpenAI(api_key=key, base_url=self.base_url, timeout=settings.timeout,
                                     max_retries=settings.retries)

    # -- prices and budget --------------------------------------------------------------------
    def cost(self, input_tokens: int, output_tokens: int) -> float | None:
        """USD at the model's prices; None when they are unknown."""
        known = PRICES.get(self.settings.model, (None, None))
        price_in = self.settings.price_input if self.settings.price_input is not None else known[0]
        price_out = self.settings.price_output if self.settings.price_output is not None else known[1]
        if price_in is None or price_out is None:
            return None
        return (input_tokens * price_in + output_tokens * price_out) / 1e6

    def budgeted(self, store: Store, endpoint: str, requests: list[dict[str, Any]],
                 most: list[tuple[int, int]]) -> Budgeted:
        """Which of `requests` (cache keys, as the asking method builds them) a run asks, planned before any
        is: `most` gives what each may cost at most, in input and output units."""
        answered = [store.exists(self.cache_path(endpoint, request)) for request in requests]
        new = [i for i, done in enumerate(answered) if not done]
        most_input, most_output = max((most[i] for i in new), default=(0, 0))
        affordable = self._affordable(len(new), most_input, most_output)
        return Budgeted([i for i, done in enumerate(answered) if done], new[:affordable], new[affordable:])

    def _affordable(self, wanted: int, most_input: int, most_output: int) -> int:
        """How many of `wanted` new requests the budget allows, each costing at most the given units."""
        allowed = wanted if self.settings.max_requests is None else min(wanted, self.settings.max_requests)
        if self.settings.max_cost is None:
            return allowed
        most = self.cost(most_input, most_output)
        if most is None:
            raise EdgedistillError(f"max_cost is set, but the prices of model {self.settings.model} are unknown",
                                   "set price_input and price_output (USD per million tokens, characters or images), "
                                   "or use max_requests")
        return min(allowed, int(self.settings.max_cost / most) if most > 0 else allowed)

    def spent(self, store: Store, endpoint: str, requests: list[dict[str, Any]], plan: Budgeted) -> Usage:
        """What the requests a run asked cost, as their cache entries recorded it, and how many were free."""
        usage = Usage(from_cache=len(plan.cached))
        for i in plan.asked:
            kept = store.read(self.cache_path(endpoint, requests[i]))
            usage = usage.add(Usage(**json.loads(kept)["usage"]) if kept is not None else Usage())
        return usage

    # -- the cache ------------------------------------------------------------------------------
    def cache_path(self, endpoint: str, request: dict[str, Any]) -> str:
        """Where the answer to `request` (what determines it, without the key) at `endpoint` is kept."""
        blob = json.dumps({"base_url": self.base_url, "model": self.settings.model, "endpoint": endpoint, **request},
                          sort_keys=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()
        return f"{CACHE}/{digest[:2]}/{digest}.json"

    # -- asking ---------------------------------------------------------------------------------
    def chat_json(self, store: Store, request: dict[str, Any], messages: Callable[[], list[dict[str, Any]]],
                  answer_type: type[Parsed], max_tokens: int) -> Answer:
        """The model's answer to `messages()`, held to `answer_type`'s JSON schema (structured outputs),
        from the cache when `request` was asked before (then `messages` is never called)."""
        schema = {"name": answer_type.__name__, "strict": True, "schema": strict_schema(answer_type)}

        def fetch() -> tuple[dict[str, Any], Usage]:
            asked = messages()
            for attempt in range(1, ANSWER_TRIES + 1):
                response = self._ask(lambda: self._client.chat.completions.create(
                    model=self.settings.model, messages=asked, max_completion_tokens=max_tokens,
                    response_format={"type": "json_schema", "json_schema": schema}))
                tokens_in, tokens_out = _tokens(response)
                text = response.choices[0].message.content if response.choices else None
                try:
                    content = answer_type.model_validate_json(text or "").model_dump(mode="json")
                except ValidationError:
                    logger.warning("%s answered something other than the JSON asked for (try %d of %d): %.200r",
                                   self.base_url, attempt, ANSWER_TRIES, text)
                    continue
                return content, Usage(asked=1, input_tokens=tokens_in, output_tokens=tokens_out,
                                      cost=self.cost(tokens_in, tokens_out))
            raise EdgedistillError(
                f"{self.settings.model} at {self.base_url} answered {ANSWER_TRIES} times with something other "
                f"than the JSON asked for, e.g. {str(text)[:200]!r}",
                "use a model that supports structured outputs (JSON schema); finished work is kept, a rerun goes on")

        content, usage = self._cached(store, CHAT, request, fetch)
        return Answer(content, usage)

    @staticmethod
    def speech_request(text: str, voice: str, speed: float) -> dict[str, Any]:
        return {"input": text, "voice": voice, "speed": round(speed, 4)}

    def speech(self, store: Store, text: str, voice: str, speed: float) -> tuple[bytes, Usage]:
        """WAV audio of `text` in `voice` at `speed` (0.25 to 4), from the cache when asked before."""
        request = self.speech_request(text, voice, speed)

        def fetch() -> tuple[str, Usage]:
            response = self._ask(lambda: self._client.audio.speech.create(
                model=self.settings.model, response_format="wav", **request))
            return (base64.b64encode(response.read()).decode(),
                    Usage(asked=1, characters=len(text), cost=self.cost(len(text), 0)))

        encoded, usage = self._cached(store, SPEECH, request, fetch)
        return base64.b64decode(encoded), usage

    def image(self, store: Store, request: dict[str, Any]) -> tuple[bytes, Usage]:
        """The encoded image (PNG, JPEG or WebP bytes) the image endpoint makes for `request` (prompt, size,
        quality, and a `variant` that tells images of one prompt apart and is not sent). From the cache
        when asked before."""
        sent = {key: value for key, value in request.items() if key != "variant"}
        # OpenAI's gpt-image models always answer base64 and refuse the parameter; others answer a URL by default
        encoding = {} if self.settings.model.startswith("gpt-image") else {"response_format": "b64_json"}

        def fetch() -> tuple[str, Usage]:
            response = self._ask(lambda: self._client.images.generate(model=self.settings.model, n=1, **sent,
                                                                      **encoding))
            encoded = response.data[0].b64_json if response.data else None
            if not encoded:
                raise EdgedistillError(f"{self.settings.model} at {self.base_url} answered no base64 image",
                                       "use a server that answers b64_json images")
            return encoded, Usage(asked=1, cost=self.cost(1, 0))

        encoded, usage = self._cached(store, IMAGES, request, fetch)
        return base64.b64decode(encoded), usage

    def _cached(self, store: Store, endpoint: str, request: dict[str, Any],
                fetch: Callable[[], tuple[Any, Usage]]) -> tuple[Any, Usage]:
        """The answer (JSON) to `request` at `endpoint`: kept in the dataset, or fetched and kept there."""
        path = self.cache_path(endpoint, request)
        kept = store.read(path)
        if kept is not None:
            return json.loads(kept)["answer"], Usage(from_cache=1)
        answer, usage = fetch()
        store.write(path, json.dumps({"answer": answer, "usage": usage.as_dict()}).encode())
        return answer, usage

    def _ask(self, call: Callable[[], Any]) -> Any:
        """One request, with the client's retries; what fails after them, as a clear error."""
        import openai

        where = f"{self.settings.model} at {self.base_url}"
        tries = self.settings.retries + 1
        try:
            return call()
        except openai.AuthenticationError:
            raise EdgedistillError(f"{self.base_url} refused the API key in {self.settings.api_key_env}",
                                   "check the key (and that it belongs to this server)") from None
        except openai.NotFoundError as error:
            raise EdgedistillError(f"{self.base_url} does not know model {self.settings.model} ({_said(error)})",
                                   "check the model name in the recipe, and base_url") from None
        except openai.RateLimitError as error:
            raise EdgedistillError(f"{where} kept answering 'too many requests' ({tries} tries): {_said(error)}",
                                   "lower concurrency, or wait for the quota; finished work is kept, a rerun goes "
                                   "on") from None
        except openai.APITimeoutError:
            raise EdgedistillError(f"{where} did not answer within {self.settings.timeout:g} s ({tries} tries)",
                                   "raise timeout, or check the server; finished work is kept, a rerun goes on") from None
        except openai.APIConnectionError:
            raise EdgedistillError(f"cannot reach {self.base_url} ({tries} tries)",
                                   "check base_url and the network; finished work is kept, a rerun goes on") from None
        except openai.APIStatusError as error:
            raise EdgedistillError(f"{where} answered HTTP {error.status_code} ({tries} tries): {_said(error)}",
                                   "check the request settings and the server's log; finished work is kept, a "
                                   "rerun goes on") from None

    def map(self, ask: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
        """`ask` on each item with `concurrency` requests in flight; results in the items' order."""
        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            return list(pool.map(ask, items))


def spent(dataset: Dataset, version: VersionInfo) -> dict[str, dict[str, Any]]:
    """What the API calls behind `version` cost, per use (verify, a speech engine, image_api), summed
    over its lineage from the `api_usage` its stages' reports recorded."""
    totals: dict[str, Usage] = {}

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for name, usage in (node.get("api_usage") or {}).items():
                totals[name] = totals.get(name, Usage()).add(Usage(**usage))
            for value in node.values():
                collect(value)

    for made in dataset.lineage(version):
        collect(dataset.report(made))
    return {name: usage.as_dict() for name, usage in totals.items()}


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema as structured outputs require it: every property required, no others."""
    def tighten(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["required"] = list(node["properties"])
                node["additionalProperties"] = False
            node.pop("title", None)
            node.pop("default", None)
            for value in node.values():
                tighten(value)
        elif isinstance(node, list):
            for value in node:
                tighten(value)

    schema = model.model_json_schema()
    tighten(schema)
    return schema


def _tokens(response: Any) -> tuple[int, int]:
    usage = getattr(response, "usage", None)
    return (getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0) if usage else (0, 0)


def _said(error: Any) -> str:
    """What the server said, short: its error message, never the request (which could hold the key)."""
    body = getattr(error, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or getattr(error, "message", "") or type(error).__name__)[:200]
