"""Settings: frozen dataclasses per section, merged as defaults < profile YAML < LLMKIT_* env < flags."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkit.core.secrets import mask_setting
from llmkit.core.secrets import mask_url as mask_url
from llmkit.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class ServerSettings:
    """Options every llmkit server shares."""

    host: str = "127.0.0.1"
    workers: int = field(default=1, metadata={"min": 1})
    log_level: str = field(default="info", metadata={"choices": LOG_LEVELS})
    access_log: bool = True
    max_body_mb: float = field(default=10.0, metadata={"min": 0.001})
    drain_timeout: float = field(default=10.0, metadata={"min": 0})
    # Behind a load balancer: seconds between SIGTERM and closing the listener, while /health answers 503
    # "draining" and requests are still served, so the balancer's health check takes the server out first.
    stop_grace_s: float = field(default=0.0, metadata={"min": 0})
    # A connection that has not sent a complete request head this long after it opened (or after the
    # first byte of its next request) is closed: slow or silent clients cannot hold sockets forever.
    header_timeout_s: float = field(default=10.0, metadata={"min": 0.001})
    # An idle kept-alive connection is closed after this: longer than the 60 s idle timeout of common
    # balancers (AWS ALB, nginx's upstream keepalive_timeout), so they close first and never send a request
    # into a connection we are closing; 75 s is nginx's own default (0: close after every response).
    keepalive_timeout_s: float = field(default=75.0, metadata={"min": 0})


@dataclass(frozen=True)
class CacheSettings:
    """The shared cache: memory://, redis:// or tiered+redis:// (memory in front of Redis)."""

    url: str = "memory://?max_size_mb=256"
    ttl: float = field(default=3600.0, metadata={"min": 0})


@dataclass(frozen=True)
class LimiterSettings:
    """Where token buckets and concurrency limits keep their state."""

    url: str = "memory://"


@dataclass(frozen=True)
class QueueSettings:
    """Where priority queues keep their items."""

    url: str = "memory://"
    capacity: int = field(default=10_000, metadata={"min": 1})


@dataclass(frozen=True)
class StorageSettings:
    """Where SQLite files live."""

    data_dir: str = "./data"


@dataclass(frozen=True)
class ClickHouseSettings:
    """The ClickHouse server used by the database source and scale-out stores."""

    url: str = "clickhouse://127.0.0.1:9000/default"
    username: str = "default"
    password: str = field(default="", metadata={"secret": True})


@dataclass(frozen=True)
class SimulateSettings:
    """`llmkit simulate`: where answers come from, how fast they stream, how many run at once."""

    port: int = field(default=4545, metadata={"min": 0, "max": 65535})
    source: str = field(default="file", metadata={"choices": ("file", "database")})
    responses_dir: str = "./zresponse"
    # Short questions answered before the markdown files (source file; answer modes match and random): a
    # prompt asking one of them (BM25 over the questions, coverage >= qa_threshold) gets its answer, any
    # other prompt a markdown file. qa_path: a .jsonl file of {qa_id, pertanyaan, jawaban, referensi} rows
    # (the init-db format) or a directory of them; "" is the English and Indonesian set shipped with llmkit.
    qa_enabled: bool = True
    qa_path: str = ""
    # The share of the prompt's idf-weighted words the best question must have (1: all of them);
    # the same value as simulate/sources/questions.py::DEFAULT_THRESHOLD.
    qa_threshold: float = field(default=0.35, metadata={"min": 0, "max": 1})
    # 0 picks a new random seed per run; any other value makes the choice of unmatched answers repeatable.
    seed: int = 0
    model: str = "gpt-4o-2024-08-06"
    # Comma-separated ids listed by GET /v1/models (the request's model is always echoed back).
    models: str = "gpt-4o-2024-08-06,gpt-4o-mini,gpt-4.1,text-embedding-3-small"
    ttft_ms: float = field(default=0.0, metadata={"min": 0})
    itl_ms: float = field(default=0.0, metadata={"min": 0})
    # Each delay is scaled by a random factor in [1 - jitter, 1 + jitter].
    jitter: float = field(default=0.0, metadata={"min": 0, "max": 1})
    # "requested": the usage chunk follows stream_options.include_usage (OpenAI); "always": the seed's way.
    usage_chunk: str = field(default="requested", metadata={"choices": ("requested", "always")})
    semaphore_limit: int = field(default=10_000, metadata={"min": 1})
    queue_timeout_ms: float = field(default=1000.0, metadata={"min": 0})
    # Chunks a stream may have buffered towards a slow client before it waits (the seed's channel size).
    channel_capacity: int = field(default=1000, metadata={"min": 1})
    # The seed's tracking.enabled: log every request's prompt match and answer size at info.
    tracking: bool = False
    # Share of model requests that get each fault (0..1, summing to at most 1); see POST /admin/faults.
    fault_rate_429: float = field(default=0.0, metadata={"min": 0, "max": 1})
    fault_rate_500: float = field(default=0.0, metadata={"min": 0, "max": 1})
    fault_rate_503: float = field(default=0.0, metadata={"min": 0, "max": 1})
    fault_rate_timeout: float = field(default=0.0, metadata={"min": 0, "max": 1})
    fault_rate_disconnect: float = field(default=0.0, metadata={"min": 0, "max": 1})
    # How long an injected timeout hangs before answering 504 (longer than any sane client timeout).
    fault_timeout_s: float = field(default=600.0, metadata={"min": 0})
    fault_retry_after: float = field(default=1.0, metadata={"min": 0})
    # Requests and tokens per minute per model, like the real APIs (0: no limit); state in limiter.url.
    rpm: int = field(default=0, metadata={"min": 0})
    tpm: int = field(default=0, metadata={"min": 0})
    # Share of tool_choice "auto" requests with relevant tools that call them (0: never, 1: always);
    # the x-llmkit-tool-call-rate header overrides it per request.
    tool_call_rate: float = field(default=1.0, metadata={"min": 0, "max": 1})
    # The key /admin/* needs (Authorization: Bearer, X-API-Key or api-key); unset, they answer 403 and the
    # simulator refuses to bind beyond loopback. Set it by env (LLMKIT_SIMULATE_ADMIN_KEY) or a profile,
    # never a flag: a command line shows in `ps`. Model routes stay open to any client key.
    admin_key: str = field(default="", metadata={"secret": True})
    # Which answer a prompt gets: match (the best-matching source answer; an unmatched prompt always gets
    # the same one), echo (the last user message back), random (the best match, else a random answer each
    # time), lorem (lorem ipsum of the requested length). The x-llmkit-answer-mode header overrides it.
    answer_mode: str = field(default="match", metadata={"choices": ("match", "echo", "random", "lorem")})
    # "MEAN,STDEV": answer lengths in tokens from a normal distribution (truncated at >= 1) for requests
    # without max_tokens (OpenAI chat and completions); "" keeps each answer's own length.
    output_tokens: str = ""
    # The model-server scheduler (vLLM's --max-num-seqs): this many requests run at once, the rest wait
    # in arrival order (0: no limit, no scheduler). max_waiting bounds the waiting ones (0: unbounded, as
    # vLLM); past it a request gets 429 with Retry-After.
    max_num_seqs: int = field(default=0, metadata={"min": 0})
    max_waiting: int = field(default=0, metadata={"min": 0})
    # llm-d-inference-sim's time-factor-under-load: TTFT and ITL are scaled by
    # 1 + (factor - 1) * (running - 1) / (max_num_seqs - 1), i.e. 1 alone and `factor` at max_num_seqs.
    time_factor_under_load: float = field(default=1.0, metadata={"min": 1})

    def __post_init__(self) -> None:
        self.output_lengths()

    def output_lengths(self) -> tuple[float, float] | None:
        """simulate.output_tokens as (mean, stdev), None when empty; ConfigError when malformed."""
        text = self.output_tokens.strip()
        if not text:
            return None
        parts = [p.strip() for p in text.split(",")]
        numbers: list[float] = []
        if len(parts) in (1, 2):
            try:
                numbers = [float(p) for p in parts]
            except ValueError:
                numbers = []
        # abs(nan) < inf is False too: NaN and infinities are both refused.
        valid = bool(numbers) and all(abs(x) < float("inf") for x in numbers)
        if not valid or numbers[0] < 1 or (len(numbers) == 2 and numbers[1] < 0):
            raise ConfigError(
                'simulate.output_tokens must be "MEAN,STDEV" in tokens (mean >= 1, stdev >= 0), '
                f'e.g. "200,50", or empty for the answers\' own lengths; got {self.output_tokens!r}'
            )
        return numbers[0], numbers[1] if len(numbers) == 2 else 0.0


@dataclass(frozen=True)
class AggregateSettings:
    """`llmkit aggregate`: where events are stored, when a publish is acknowledged, how much may wait."""

    port: int = field(default=8000, metadata={"min": 0, "max": 65535})
    # sqlite:///relative/path.db, sqlite:////absolute/path.db or clickhouse://host:9000/db.
    # The seed's DEDUPLICATION_DB_PATH variable names a SQLite file and overrides this.
    store: str = "sqlite:///./data/aggregate.db"
    # durable: answer 200 once the events are committed; queued: answer 202 at once (the seed's way).
    ack: str = field(default="durable", metadata={"choices": ("durable", "queued")})
    # Events accepted but not yet committed; a publish that does not fit gets 429 with Retry-After.
    channel_capacity: int = field(default=100_000, metadata={"min": 1})
    # At most this many events in one group-commit transaction.
    group_max_events: int = field(default=20_000, metadata={"min": 1})
    # SQLite PRAGMA synchronous: full survives power loss; normal survives a killed process only.
    sync: str = field(default="full", metadata={"choices": ("full", "normal")})
    # Purge events stored longer ago than this (0: keep); purged ids leave the dedup window.
    retention_days: float = field(default=0.0, metadata={"min": 0})
    # Keep at most this many events, oldest purged first (0: no limit); purged ids leave the dedup window.
    max_events: int = field(default=0, metadata={"min": 0})
    purge_interval_s: float = field(default=60.0, metadata={"min": 0.01})
    # The largest `limit` GET /events accepts.
    max_page: int = field(default=10_000, metadata={"min": 1})


@dataclass(frozen=True)
class OrchestrateSettings:
    """`llmkit orchestrate`: who runs jobs, how many at once, how long results and limits last."""

    # 8090: the gateway keeps the seed's 8080 (simulate 4545, aggregate 8000), so both run side by side.
    port: int = field(default=8090, metadata={"min": 0, "max": 65535})
    # all: API and workers in one process; api: only the API; worker: only workers. api and worker
    # processes share jobs through a redis:// queue.url (the job store follows it).
    role: str = field(default="all", metadata={"choices": ("all", "api", "worker")})
    backend: str = field(default="echo", metadata={"choices": ("echo", "openai", "ollama")})
    # The OpenAI-compatible base URL (openai) or the Ollama server (ollama).
    backend_url: str = "http://127.0.0.1:4545/v1"
    api_key: str = field(default="", metadata={"secret": True})
    model: str = ""
    echo_delay_ms: float = field(default=0.0, metadata={"min": 0})
    # Worker tasks per process: jobs run at once.
    concurrency: int = field(default=4, metadata={"min": 1})
    job_timeout_s: float = field(default=300.0, metadata={"min": 0.001})
    retries: int = field(default=3, metadata={"min": 0})
    result_ttl_s: float = field(default=3600.0, metadata={"min": 1})
    # Per session (per API key when the caller presents one): rate_limit_requests submits per
    # rate_limit_window seconds (0 requests: no limit).
    rate_limit_requests: int = field(default=100, metadata={"min": 0})
    rate_limit_window: float = field(default=60.0, metadata={"min": 0.001})
    # The buckets a submit must pass: per session_id, per client address (the peer, never X-Forwarded-For),
    # or both. A caller that presents an API key is counted by its key (key:<key id>) instead of its
    # session_id, which it could invent; the client address rule stays. Anonymous callers invent session
    # ids freely, so `both` also counts them by address.
    rate_limit_by: str = field(default="both", metadata={"choices": ("session", "client", "both")})
    cache_results: bool = True
    # A worker that took a job and went silent this long loses it to another worker (queue.url shared).
    lease_s: float = field(default=30.0, metadata={"min": 0.1})
    long_poll_max_s: float = field(default=300.0, metadata={"min": 0})
    ws_max_message_kb: int = field(default=64, metadata={"min": 1})
    cors: bool = True
    # The platform store whose API keys the orchestrator accepts: the gateway's gateway.platform_url
    # (sqlite:///path.db, postgresql://...). Empty: no keys, every caller is the default tenant. A job
    # belongs to its caller's tenant: other tenants get 404 for it, platform admins see every job.
    platform_url: str = ""
    # Must equal gateway.key_pepper, or no key the gateway issued verifies here.
    key_pepper: str = field(default="", metadata={"secret": True})
    # The bootstrap admin credential (env LLMKIT_ORCHESTRATE_ADMIN_KEY): it sees every tenant's jobs.
    # An orchestrator bound beyond loopback refuses to start without it.
    admin_key: str = field(default="", metadata={"secret": True})
    # Every route but /health and the CORS preflight needs an API key with the chat scope (or the
    # admin key); needs platform_url for keys other than the admin key.
    require_api_key: bool = False


@dataclass(frozen=True)
class GatewaySettings:
    """`llmkit gateway`: the upstream model servers, the caches, coalescing and the upstream call queue."""

    port: int = field(default=8080, metadata={"min": 0, "max": 65535})
    # ollama: POST {url}/api/chat (NDJSON); openai: POST {url}/chat/completions (SSE), url ending in /v1.
    upstream_kind: str = field(default="ollama", metadata={"choices": ("ollama", "openai")})
    # Comma-separated upstream URLs, each with an optional weight: "http://gpu1:11434*3, http://gpu2:11434".
    upstreams: str = "http://127.0.0.1:4545"
    api_key: str = field(default="", metadata={"secret": True})
    # The model of requests that name none (the seed's ollama.model).
    model: str = "deepseek-r1:8b"
    # Sent with every Ollama request and by warm_model: how long the upstream keeps the model loaded.
    keep_alive: str = "15m"
    connect_timeout_s: float = field(default=5.0, metadata={"min": 0.001})
    # Until the upstream's first byte (the whole answer when not streaming); then at most idle_timeout_s
    # between two pieces of a stream.
    first_byte_timeout_s: float = field(default=120.0, metadata={"min": 0.001})
    idle_timeout_s: float = field(default=60.0, metadata={"min": 0.001})
    # Attempts after a 5xx, 408, 429, timeout or connection error, on another upstream when there is one.
    retries: int = field(default=2, metadata={"min": 0})
    backoff_base_s: float = field(default=0.1, metadata={"min": 0})
    backoff_cap_s: float = field(default=2.0, metadata={"min": 0})
    # Failed calls in a row that open an upstream's circuit for breaker_reset_s (0: no breaker).
    breaker_threshold: int = field(default=5, metadata={"min": 0})
    breaker_reset_s: float = field(default=30.0, metadata={"min": 0})
    # The response cache lives in cache.url for cache.ttl seconds (the seed's cache.enabled).
    cache_enabled: bool = True
    # The seed's cache.max_size_mb: the memory budget of a memory:// (or tiered's local) cache.url
    # (0: the size the URL gives).
    cache_max_size_mb: float = field(default=0.0, metadata={"min": 0})
    conversation_enabled: bool = True
    conversation_max_size_mb: float = field(default=128.0, metadata={"min": 0.001})
    conversation_ttl_s: float = field(default=1800.0, metadata={"min": 0})
    # With a memory:// cache.url, the part of conversation_max_size_mb that holds first turns under an id
    # the gateway made up (most are one-off prompts nobody continues), so they cannot push out the rest.
    conversation_new_share: float = field(default=0.25, metadata={"min": 0.01, "max": 0.9})
    # The seed's batch section: identical requests in flight share one upstream call (deduplication);
    # batch_max_size: the most requests one call serves (0: no limit); batch_timeout_ms: how long a
    # finished call still serves identical requests that arrive after it (0: not at all).
    deduplication: bool = True
    batch_max_size: int = field(default=0, metadata={"min": 0})
    batch_timeout_ms: float = field(default=0.0, metadata={"min": 0})
    # Upstream calls at once per process; the others wait by priority, max_queue_size at most (then 429).
    max_concurrent: int = field(default=4, metadata={"min": 1})
    max_queue_size: int = field(default=100, metadata={"min": 1})
    # How long GET /api/chat-queue?requestId= still answers a finished request.
    queue_result_ttl_s: float = field(default=600.0, metadata={"min": 1})
    # The most finished requests it still answers (the oldest go first): bounds their memory under load.
    queue_result_max: int = field(default=10_000, metadata={"min": 1})
    # The platform store of API keys and tenants (the seed's DATABASE_URL): sqlite:///path.db for one
    # process, postgresql://user:pw@host:5432/db for replicas; platform_pool_size: its connections.
    platform_url: str = "sqlite:///./data/platform.db"
    platform_pool_size: int = field(default=10, metadata={"min": 1, "max": 1000})
    # The bootstrap admin credential for /api/admin/* (env LLMKIT_GATEWAY_ADMIN_KEY): it creates the
    # first keys. A gateway bound beyond loopback refuses to start without it.
    admin_key: str = field(default="", metadata={"secret": True})
    # Keys are stored as SHA-256 of their secret, or HMAC-SHA-256 with this pepper when set (keep it out
    # of the database: a stolen store then cannot even be brute-forced offline).
    key_pepper: str = field(default="", metadata={"secret": True})
    # Every route but /health needs an API key with the route's scope (the seed's MULTI_TENANT_MODE).
    require_api_key: bool = False
    # Query analytics: one record per chat request, written in batches off the request path, into
    # analytics_url (empty: the platform store's database; or clickhouse://host:9000/db for volume).
    analytics_enabled: bool = True
    analytics_url: str = ""
    analytics_retention_days: int = field(default=90, metadata={"min": 1, "max": 36500})
    # Batches are written by a child process (the serving process only hands them over); false: by a
    # thread of this process, for where a child cannot be started.
    analytics_writer_process: bool = True
    # Embeddings for semantic and hybrid search, made by the index job: an OpenAI-compatible upstream
    # (http://host:port, .../v1 or .../v1/embeddings; `llmkit simulate` serves one). Empty: keyword only.
    embeddings_url: str = ""
    embeddings_model: str = "text-embedding-3-small"
    embeddings_api_key: str = field(default="", metadata={"secret": True})
    # The vector width asked for (text-embedding-3 models shorten theirs; 0: the model's own).
    embeddings_dimensions: int = field(default=0, metadata={"min": 0, "max": 3072})
    # Texts per /v1/embeddings call, and how long one call may take.
    embeddings_batch: int = field(default=64, metadata={"min": 1, "max": 2048})
    embeddings_timeout_s: float = field(default=30.0, metadata={"min": 0.001})
    # Ground every chat answer in the tenant's documents unless a request says "rag": false: "" (off),
    # or TYPE[:TOP_K] (keyword, semantic or hybrid; e.g. hybrid:4). A request's "rag" object overrides it.
    rag_default: str = ""
    # Seconds before a failed background job (document indexing) runs again; doubled at each failure.
    jobs_backoff_s: float = field(default=1.0, metadata={"min": 0.001})
    # A finished job that a newer one on the same document replaced (or whose document is gone) is
    # deleted this long after it finished; a document's newest job is kept.
    jobs_retention_s: float = field(default=604800.0, metadata={"min": 1})
    # Webhooks (docs/webhooks.md): a delivery's POST gives up after webhooks_timeout_s; timeouts,
    # connection errors, 429 and 5xx are retried with backoff (Retry-After honoured) up to
    # webhooks_max_attempts attempts in all; a rotated secret still signs for webhooks_rotation_grace_s.
    # A delivery is leased for webhooks_timeout_s + webhooks_lease_margin_s: a replica that died holding
    # it frees it after that, and it is sent again (receivers deduplicate by webhook-id).
    # Targets on private networks (10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10) only with
    # webhooks_allow_private; link-local and cloud metadata addresses never, loopback always.
    webhooks_timeout_s: float = field(default=10.0, metadata={"min": 0.001, "max": 300})
    webhooks_max_attempts: int = field(default=8, metadata={"min": 1, "max": 100})
    webhooks_rotation_grace_s: float = field(default=86400.0, metadata={"min": 0})
    webhooks_lease_margin_s: float = field(default=30.0, metadata={"min": 0.1, "max": 3600})
    webhooks_allow_private: bool = False


@dataclass(frozen=True)
class TelemetrySettings:
    """OpenTelemetry tracing (OTLP/HTTP) and metric labels, for every llmkit server (the seed's
    TELEMETRY_ENABLED, OTLP_ENDPOINT, SAMPLING_RATE, SERVICE_NAME and ENVIRONMENT map onto these)."""

    enabled: bool = False
    # The collector's OTLP/HTTP base URL: spans go to {otlp_endpoint}/v1/traces.
    otlp_endpoint: str = "http://127.0.0.1:4318"
    # Parent-based: a request that arrives with a sampled traceparent is traced; a new trace with this
    # probability.
    sampling_rate: float = field(default=1.0, metadata={"min": 0, "max": 1})
    # Empty: "llmkit-<command>" (llmkit-gateway, llmkit-simulate, ...).
    service_name: str = ""
    environment: str = "development"
    # Prompts and answers go into spans only when this is on.
    capture_content: bool = False
    # A tenant label on the gateway's metrics (one series per tenant: off unless tenants are few).
    tenant_labels: bool = False


# The one table of sections; a system adds its dataclass here.
SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "cache": CacheSettings,
    "limiter": LimiterSettings,
    "queue": QueueSettings,
    "storage": StorageSettings,
    "clickhouse": ClickHouseSettings,
    "simulate": SimulateSettings,
    "aggregate": AggregateSettings,
    "orchestrate": OrchestrateSettings,
    "gateway": GatewaySettings,
    "telemetry": TelemetrySettings,
}

# LLMKIT_* variables that choose what to load rather than a setting.
# LLMKIT_API_KEY is the caller's key for client commands (`llmkit orchestrate submit`).
RESERVED_ENV = frozenset({"LLMKIT_PROFILE", "LLMKIT_API_KEY"})
DEFAULT_PROFILE = "default"


@dataclass(frozen=True)
class Settings:
    """The merged settings of one run, with where each value came from."""

    server: ServerSettings = ServerSettings()
    cache: CacheSettings = CacheSettings()
    limiter: LimiterSettings = LimiterSettings()
    queue: QueueSettings = QueueSettings()
    storage: StorageSettings = StorageSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    simulate: SimulateSettings = SimulateSettings()
    aggregate: AggregateSettings = AggregateSettings()
    orchestrate: OrchestrateSettings = OrchestrateSettings()
    gateway: GatewaySettings = GatewaySettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    profile: str = "(defaults)"
    origins: Mapping[str, str] = field(default_factory=dict)

    def items(self) -> list[tuple[str, Any, str]]:
        """Every `section.key` with its value and origin, in declaration order."""
        rows = []
        for name in SECTIONS:
            section = getattr(self, name)
            for f in dataclasses.fields(section):
                dotted = f"{name}.{f.name}"
                rows.append((dotted, getattr(section, f.name), self.origins.get(dotted, "default")))
        return rows

    def masked(self) -> list[tuple[str, Any, str]]:
        """Like `items`, with passwords, tokens and URL credentials hidden."""
        shown = {f"{name}.{k}": v for name in SECTIONS for k, v in public_values(getattr(self, name)).items()}
        return [(key, shown[key], origin) for key, _, origin in self.items()]


def public_values(section: Any) -> dict[str, Any]:
    """A settings section's values as anyone may see them (`llmkit config show`, a gateway's /stats): fields
    marked secret hidden whatever their name, credentials in URLs and secret-named values masked."""
    values = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        values[f.name] = "********" if f.metadata.get("secret") and value else mask_setting(f.name, value)
    return values


# One masking function for settings, errors and logs (llmkit.core.secrets); these names stay for callers.
mask_value = mask_setting


def profile_dirs() -> list[Path]:
    """Where named profiles are looked up: ./profiles, then the ones shipped with llmkit."""
    package = Path(__file__).resolve().parent
    dirs = [Path.cwd() / "profiles", package / "_profiles", package.parent / "profiles"]
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.append(d.resolve())
    return seen


def known_profiles() -> list[str]:
    """Names of the profiles found in `profile_dirs()`."""
    return sorted({p.stem for d in profile_dirs() for p in d.glob("*.yml")})


def resolve_profile(profile: str) -> Path:
    """A profile NAME (looked up in the profile dirs) or PATH -> the file to read."""
    looks_like_path = "/" in profile or profile.endswith((".yml", ".yaml")) or os.sep in profile
    if looks_like_path:
        path = Path(profile).expanduser()
        if not path.is_file():
            raise ConfigError(f"profile file {path}: not found (pass a readable YAML file or a profile name)")
        return path
    for d in profile_dirs():
        for suffix in (".yml", ".yaml"):
            candidate = d / f"{profile}{suffix}"
            if candidate.is_file():
                return candidate
    raise ConfigError(
        f"profile {profile!r} not found in {', '.join(str(d) for d in profile_dirs()) or 'any profile dir'}; "
        f"known profiles: {', '.join(known_profiles()) or 'none'}; or pass a path to a .yml file"
    )


def read_profile(path: Path) -> dict[str, Any]:
    """Parse a profile file into a mapping, with errors that name the file."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"profile file {path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"profile file {path}: invalid YAML{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"profile file {path}: expected a mapping of sections ({', '.join(SECTIONS)}), "
            f"got {type(data).__name__}"
        )
    return data


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _field_types(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


_BUILTIN_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _python_type(f: dataclasses.Field[Any]) -> type:
    tp = f.type
    if isinstance(tp, str):
        return _BUILTIN_TYPES[tp]
    assert isinstance(tp, type)
    return tp


def _coerce_yaml(value: Any, tp: type) -> Any:
    """A YAML value for a field of type `tp`, or raise TypeError."""
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str and isinstance(value, str):
        return value
    raise TypeError


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce_text(text: str, tp: type) -> Any:
    """An environment string for a field of type `tp`, or raise TypeError."""
    if tp is bool:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise TypeError
    if tp is int:
        try:
            return int(text.strip())
        except ValueError:
            raise TypeError from None
    if tp is float:
        try:
            return float(text.strip())
        except ValueError:
            raise TypeError from None
    return text


def _check_bounds(dotted: str, value: Any, f: dataclasses.Field[Any], where: str) -> None:
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: {dotted} must be one of {', '.join(choices)}; got {value!r}")
    low, high = f.metadata.get("min"), f.metadata.get("max")
    if low is not None and value < low:
        raise ConfigError(f"{where}: {dotted} must be >= {low}; got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{where}: {dotted} must be <= {high}; got {value!r}")


def _lookup_field(section: str, key: str, where: str) -> dataclasses.Field[Any]:
    if section not in SECTIONS:
        raise ConfigError(f"{where}: unknown section {section!r}; valid sections: {', '.join(SECTIONS)}")
    fields = _field_types(SECTIONS[section])
    if key not in fields:
        raise ConfigError(
            f"{where}: unknown key {section}.{key}; valid keys in {section}: {', '.join(fields)}"
        )
    return fields[key]


def _profile_values(data: Mapping[str, Any], path: Path, kind: str = "profile") -> dict[str, Any]:
    values: dict[str, Any] = {}
    where = f"{kind} file {path}"
    for section, body in data.items():
        if not isinstance(section, str) or section not in SECTIONS:
            raise ConfigError(f"{where}: unknown section {section!r}; valid sections: {', '.join(SECTIONS)}")
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(
                f"{where}: section {section} must be a mapping of keys "
                f"({', '.join(_field_types(SECTIONS[section]))}), got {type(body).__name__}"
            )
        for key, raw in body.items():
            f = _lookup_field(section, str(key), where)
            tp = _python_type(f)
            dotted = f"{section}.{key}"
            try:
                value = _coerce_yaml(raw, tp)
            except TypeError:
                hint = " (quote it in YAML)" if tp is str else ""
                raise ConfigError(
                    f"{where}: {dotted} must be {_type_name(tp)}{hint}; got {type(raw).__name__} {raw!r}"
                ) from None
            _check_bounds(dotted, value, f, where)
            values[dotted] = value
    return values


def _env_values(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    values: dict[str, tuple[Any, str]] = {}
    # Longest section names first so LLMKIT_CLICKHOUSE_URL never matches a shorter section.
    sections = sorted(SECTIONS, key=len, reverse=True)
    for name, text in env.items():
        if not name.startswith("LLMKIT_") or name in RESERVED_ENV:
            continue
        rest = name[len("LLMKIT_") :].lower()
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(
                f"environment variable {name}: unknown section; use LLMKIT_<SECTION>_<KEY> with a section "
                f"among {', '.join(SECTIONS)}"
            )
        key = rest[len(section) + 1 :]
        f = _lookup_field(section, key, f"environment variable {name}")
        tp = _python_type(f)
        try:
            value = _coerce_text(text, tp)
        except TypeError:
            raise ConfigError(
                f"environment variable {name}: must be {_type_name(tp)}; got {text!r}"
            ) from None
        _check_bounds(f"{section}.{key}", value, f, f"environment variable {name}")
        values[f"{section}.{key}"] = (value, f"env {name}")
    return values


def load_settings(
    profile: str | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    layers: Sequence[tuple[Mapping[str, Any], Path]] = (),
) -> Settings:
    """Merge defaults < profile < layers < LLMKIT_* env < flags into one `Settings`.

    `flags` maps `section.key` to a value (None means "not given") or to a `(value, "--flag")` pair.
    `layers` are profile-shaped mappings read from other files (a seed's config.yml), each with its path.
    """
    env = os.environ if env is None else env
    name = profile or env.get("LLMKIT_PROFILE") or DEFAULT_PROFILE
    path = resolve_profile(name)
    merged: dict[str, tuple[Any, str]] = {}
    for dotted, value in _profile_values(read_profile(path), path).items():
        merged[dotted] = (value, f"profile {path}")
    for data, layer_path in layers:
        for dotted, value in _profile_values(data, layer_path, "config").items():
            merged[dotted] = (value, f"config {layer_path}")
    merged.update(_env_values(env))
    for dotted, given in (flags or {}).items():
        value, origin = given if isinstance(given, tuple) else (given, f"flag {dotted}")
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        f = _lookup_field(section, key, origin)
        _check_bounds(dotted, value, f, origin)
        merged[dotted] = (value, origin)
    return _build(merged, str(path))


def _build(merged: Mapping[str, tuple[Any, str]], profile: str) -> Settings:
    sections: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, cls in SECTIONS.items():
        kwargs = {}
        for f in dataclasses.fields(cls):
            dotted = f"{name}.{f.name}"
            if dotted in merged:
                kwargs[f.name], origins[dotted] = merged[dotted]
        sections[name] = cls(**kwargs)
    return Settings(**sections, profile=profile, origins=origins)
