"""Typed records: one per object, with Replicate's field names. They are what services pass around;
only the store, the registry, the files service and the deployment service turn them into Redis
hashes and back (`from_redis`, `to_redis`). Wire shapes (`router/wire.py`) are built from them."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict

from vendo_core.errors import Forbidden, InvalidRequest
from vendo_core.status import Status

COG_VERSION = "0.23.1"  # the Cog that runs every version (pinned in pyproject.toml)


class Record(BaseModel):
    """Base of every record. Redis hashes hold strings: `JSON` fields are stored as JSON, booleans as
    "1"/"0", numbers as their repr, None as an absent field; pydantic parses the rest back."""

    model_config = ConfigDict(extra="ignore")
    JSON: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_redis(cls, raw: dict[str, str]):
        """The record from a hash, or None for a missing one."""
        if not raw:
            return None
        data: dict[str, Any] = dict(raw)
        for k in cls.JSON:
            if k in data:
                data[k] = json.loads(data[k])
        return cls.model_validate(data)

    def to_redis(self, *, exclude: set[str] | None = None) -> dict[str, str]:
        return encode_fields(self.model_dump(exclude=exclude, exclude_none=True), self.JSON)


def encode_fields(fields: dict[str, Any], json_fields: tuple[str, ...]) -> dict[str, str]:
    """Hash fields for `fields` (a whole record or a change to one); None values are left out."""
    out = {}
    for k, v in fields.items():
        if v is None:
            continue
        if k in json_fields:
            out[k] = json.dumps(v, separators=(",", ":"))
        elif isinstance(v, bool):
            out[k] = "1" if v else "0"
        elif isinstance(v, Status):
            out[k] = v.value
        else:
            out[k] = str(v)
    return out


ROLES = ("admin", "push")  # admin: everything, and the cluster's hosts in /v1/status; push: models


def check_roles(roles, field: str = "roles") -> None:
    """InvalidRequest naming `field` for any role that is not one of ROLES."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise InvalidRequest(field, f"unknown role(s) {unknown}; roles are {list(ROLES)}")


class Account(Record):
    """A user or an organization: it owns tokens, models, predictions and deployments."""

    JSON: ClassVar[tuple[str, ...]] = ("roles",)
    username: str
    type: Literal["user", "organization"] = "user"
    name: str | None = None
    created_at: str | None = None
    roles: list[str] = []
    disabled: bool = False  # its tokens stop working; its data stays
    limit_nanos: int | None = None  # spend limit per billing period, in nano-dollars; None: none
    orgs: list[str] = []  # the organizations it is a member of (not stored on the account's hash)

    def has(self, role: str) -> bool:
        return role in self.roles or "admin" in self.roles

    def acts_for(self, owner: str) -> bool:
        """Whether this caller may see and act on what `owner` owns: its own, or an organization's
        it is a member of. The one ownership rule; a record it fails is a 404."""
        return owner == self.username or owner in self.orgs

    def require(self, role: str, doing: str) -> None:
        """Forbidden (403) unless the account holds `role` (or is an admin)."""
        if not self.has(role):
            raise Forbidden(f"account {self.username!r} may not {doing}: it needs the {role!r} role, "
                            f"which an admin grants with `vendo accounts grant {self.username} {role}`")


class Token(Record):
    """An API token, as stored: never the token itself, only its sha256 (the hash's key)."""

    id: str  # "tok_" + the first 16 hex digits of the digest: what people name it by
    username: str
    name: str | None = None
    prefix: str | None = None  # its first characters, to recognise it by
    created_at: str | None = None
    expires_at: str | None = None  # ISO 8601; past it, the token no longer works
    last_used_at: str | None = None


class Model(Record):
    owner: str
    name: str
    visibility: Literal["public", "private"] = "private"
    description: str | None = None
    github_url: str | None = None
    paper_url: str | None = None
    license_url: str | None = None
    cover_image_url: str | None = None
    hardware: str | None = None
    run_count: int = 0
    latest_version: str | None = None
    created_at: str | None = None
    created_ts: float | None = None

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.name}"

    def visible_to(self, account: Account) -> bool:
        """A public model, or the account's own. Everything else is a 404 to it."""
        return self.visibility == "public" or account.acts_for(self.owner)


class Version(Record):
    """An immutable pushed package of a model, and what its replicas reported of their setup."""

    JSON: ClassVar[tuple[str, ...]] = ("openapi_schema", "traits", "runtime_env")
    id: str
    model: str
    created_at: str | None = None
    cog_version: str | None = None
    openapi_schema: dict[str, Any] = {}
    traits: dict[str, Any] = {}
    runtime_env: dict[str, Any] | None = None
    package_key: str | None = None
    package_digest: str | None = None
    package_sha256: str | None = None
    hardware: str | None = None
    max_replicas: int | None = None
    downscale_delay_s: float | None = None
    upscale_delay_s: float | None = None
    setup_status: str | None = None
    setup_error: str | None = None
    setup_logs: str | None = None
    setup_time: float | None = None
    setup_completed_at: float | None = None
    isolation: str | None = None  # "full" | "partial": whether its model code runs unprivileged
    isolation_reason: str | None = None
    readme: str | None = None  # the pushed project's README.md, shown (sanitized) on the model page
    # a fine-tune (a training's result): its base version's package and schema, run with these
    # weights (`COG_WEIGHTS`) on the base version's replicas
    base_version: str | None = None
    weights_key: str | None = None
    weights_sha256: str | None = None
    training: str | None = None  # the training that made it

    @property
    def trainable(self) -> bool:
        """Whether its package has a `train` target (so `TrainingInput` is in its schema)."""
        return "TrainingInput" in ((self.openapi_schema.get("components") or {}).get("schemas") or {})


# where a prediction came from: the HTTP API, the web app, a Python handle inside the cluster, a
# batch job (Replicate's own values are the first two)
Source = Literal["api", "web", "handle", "batch"]
SOURCES: tuple[str, ...] = get_args(Source)


Kind = Literal["prediction", "training"]


class Prediction(Record):
    """A prediction, or a training (`kind`): a training is a run of a version's `train` target
    with a `destination` model, and shares every rule of a prediction's life (statuses, logs,
    cancel, deadlines, webhooks, retention, sweeps); only its wire shape and listing differ."""

    JSON: ClassVar[tuple[str, ...]] = ("input", "output", "metrics", "webhook_events_filter")
    id: str
    kind: Kind = "prediction"
    destination: str | None = None  # a training's: the model its weights become a version of
    account: str
    model: str
    version: str
    status: Status
    input: dict[str, Any] | None = None
    output: Any = None
    logs: str = ""
    error: str | None = None
    metrics: dict[str, Any] | None = None
    created_at: str
    created_ts: float
    started_at: str | None = None
    completed_at: str | None = None
    source: Source = "api"
    iterator: bool = False
    deployment: str | None = None
    app: str | None = None
    base_url: str | None = None
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    webhook_completed: str | None = None
    deadline: str | None = None
    deadline_ts: float | None = None
    data_removed: bool = False
    shared: bool = False  # its owner made it readable by anyone with its id (the Share button)
    started_ts: float | None = None
    # billing: the hardware it ran on and its price, fixed at creation; what it cost, fixed by its
    # terminal transition (integer milliseconds and nano-dollars; see vendo_core.billing)
    hardware: str | None = None
    price_nanos: int | None = None
    billed_ms: int | None = None
    cost_nanos: int | None = None

    @property
    def done(self) -> bool:
        return self.status.is_terminal()

    def finished(self, fields: dict[str, Any]) -> Prediction:
        """This `starting` record as its terminal move left it, from what that move wrote
        (a replica's answer): status, output, error, logs, metrics and its two times."""
        return self.model_copy(update={
            "status": Status(fields["status"]), "output": fields.get("output"), "error": fields.get("error"),
            "logs": fields.get("logs") or "", "metrics": fields.get("metrics"),
            "started_at": fields.get("started_at"), "completed_at": fields.get("completed_at")})


class Batch(Record):
    """A batch of predictions run by `cluster.batch` (a Ray job): one line of input, one
    prediction; the job writes its progress here for the API and `vendo batches`."""

    id: str
    account: str
    model: str
    input: str
    output: str
    status: Literal["running", "succeeded", "failed", "canceled"] = "running"
    total: int | None = None
    done: int = 0  # lines with a result (skipped ones included)
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0  # succeeded in an earlier run of the same batch: not run again
    concurrency: int = 0
    job_id: str | None = None
    error: str | None = None
    created_at: str
    created_ts: float
    updated_at: str | None = None


class File(Record):
    """An uploaded file: its bytes are at `key` in the object store until `expires_ts`."""

    JSON: ClassVar[tuple[str, ...]] = ("metadata",)
    id: str
    account: str
    name: str
    content_type: str
    size: int
    md5: str
    sha256: str
    metadata: dict[str, Any] = {}
    created_at: str
    created_ts: float
    expires_at: str
    expires_ts: float
    key: str


class Deployment(Record):
    """A named endpoint: `owner/name` pinned to a version of `model`, its hardware and instances;
    `number` is its current release."""

    owner: str
    name: str
    model: str
    version: str
    hardware: str
    min_instances: int
    max_instances: int
    number: int = 1
    created_at: str | None = None
    release_created_at: str | None = None
    created_by: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.name}"
