"""Wire shapes of the Replicate API, built in one place from stored records. Field names are
Replicate's; required fields are never null (the official client validates them)."""

from __future__ import annotations

from typing import Annotated, Any, Callable, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from vendo_core import records
from vendo_core.files import stored_key

# the handle API's answer in place of a record too large for the caller's gRPC message (4 MiB): the
# caller fetches the record over Ray's actor calls instead (`cluster.handle.Vendo.call`)
REPLY_TOO_LARGE = "_vendo_reply_too_large"


def resolve_files(value: Any, url_for: Callable[[str], str]) -> Any:
    """Replace stored file references in an output with expiring URLs (done at read time)."""
    if isinstance(value, str):
        key = stored_key(value)
        return value if key is None else url_for(key)
    if isinstance(value, list):
        return [resolve_files(v, url_for) for v in value]
    if isinstance(value, dict):
        return {k: resolve_files(v, url_for) for k, v in value.items()}
    return value


def _run(rec: records.Prediction, url_for: Callable[[str], str]) -> dict[str, Any]:
    """The fields a prediction and a training share, built from the record."""
    out = {"id": rec.id, "model": rec.model, "version": rec.version, "status": rec.status.value,
           "input": rec.input, "output": resolve_files(rec.output, url_for), "logs": rec.logs or "",
           "error": rec.error, "created_at": rec.created_at, "started_at": rec.started_at,
           "completed_at": rec.completed_at, "source": rec.source, "data_removed": rec.data_removed}
    if rec.metrics is not None:
        out["metrics"] = rec.metrics
    if rec.deadline:
        out["deadline"] = rec.deadline
    if rec.webhook:
        out["webhook"] = rec.webhook
        out["webhook_events_filter"] = rec.webhook_events_filter or ["start", "output", "logs", "completed"]
    return out


def prediction(rec: records.Prediction, base: str, url_for: Callable[[str], str], *,
               as_starting: bool = False) -> dict[str, Any]:
    """The prediction as GET returns it. `as_starting` is the unfinished `Prefer: wait` answer:
    status `starting` and no output, so the client keeps polling."""
    pid = rec.id
    out = _run(rec, url_for)
    if rec.deployment:
        out["deployment"] = rec.deployment
    if rec.shared:
        out["shared"] = True
    out["urls"] = {
        "get": f"{base}/v1/predictions/{pid}",
        "cancel": f"{base}/v1/predictions/{pid}/cancel",
        "stream": f"{base}/v1/predictions/{pid}/stream",
        "web": f"{base}/p/{pid}",  # the web app's prediction page, as replicate.com/p/{id}
    }
    if as_starting:
        out.update(status="starting", output=None, completed_at=None, error=None)
        out.pop("metrics", None)
    return out


def training(rec: records.Prediction, base: str, url_for: Callable[[str], str]) -> dict[str, Any]:
    """A training as `trainings.get` returns it. A succeeded one's output is Replicate's
    `{"version": "dest_owner/dest_name:VID", "weights": URL}` (the client reads `destination` from
    it); `destination` is the model the caller named."""
    tid = rec.id
    out = _run(rec, url_for)
    out["destination"] = rec.destination
    out["urls"] = {"get": f"{base}/v1/trainings/{tid}", "cancel": f"{base}/v1/trainings/{tid}/cancel",
                   "stream": f"{base}/v1/predictions/{tid}/stream"}
    return out


def record(rec: records.Prediction, base: str, url_for: Callable[[str], str]) -> dict[str, Any]:
    """A prediction or a training, each in its own shape (webhooks send either)."""
    return training(rec, base, url_for) if rec.kind == "training" else prediction(rec, base, url_for)


def version(v: records.Version) -> dict[str, Any]:
    return {"id": v.id, "created_at": v.created_at, "cog_version": v.cog_version or records.COG_VERSION,
            "openapi_schema": v.openapi_schema}


def model(m: records.Model, base: str, latest: records.Version | None) -> dict[str, Any]:
    return {
        "url": f"{base}/{m.owner}/{m.name}",
        "owner": m.owner, "name": m.name, "visibility": m.visibility,
        "description": m.description, "github_url": m.github_url,
        "paper_url": m.paper_url, "license_url": m.license_url,
        "cover_image_url": m.cover_image_url, "run_count": m.run_count,
        "default_example": None, "latest_version": version(latest) if latest else None,
        "created_at": m.created_at, "is_official": False,
        "hardware": m.hardware,
    }


def account(a: records.Account) -> dict[str, Any]:
    return {"type": a.type, "username": a.username, "name": a.name or a.username, "github_url": None}


def page(results: list, next_url: str | None = None, previous_url: str | None = None) -> dict[str, Any]:
    return {"previous": previous_url, "next": next_url, "results": results}


def file(f: records.File, base: str, download_url: str | None = None) -> dict[str, Any]:
    """An uploaded file's metadata (every field but `expires_at` is required by the client)."""
    urls = {"get": f"{base}/v1/files/{f.id}"}
    if download_url:
        urls["download"] = download_url
    return {"id": f.id, "name": f.name, "content_type": f.content_type, "size": f.size,
            "etag": f.md5, "checksums": {"sha256": f.sha256, "md5": f.md5},
            "metadata": f.metadata, "created_at": f.created_at,
            "expires_at": f.expires_at, "urls": urls}


def deployment(d: records.Deployment, creator: records.Account) -> dict[str, Any]:
    return {
        "owner": d.owner, "name": d.name,
        "current_release": {
            "number": d.number, "model": d.model, "version": d.version,
            "created_at": d.release_created_at or d.created_at,
            "created_by": {**account(creator), "avatar_url": None},
            "configuration": {"hardware": d.hardware, "min_instances": d.min_instances,
                              "max_instances": d.max_instances},
        },
    }


def hardware(sku: str, name: str) -> dict[str, str]:
    return {"sku": sku, "name": name}


def collection(c: Any, models: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A collection; the list view leaves `models` out, the detail view lists the visible ones."""
    out = {"slug": c.slug, "name": c.name, "description": c.description, "full_description": c.full_description}
    if models is not None:
        out["models"] = models
    return out


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")
    return value


class ModelCreate(BaseModel):
    """The body of `POST /v1/models`, as `models.create` sends it; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    owner: str
    name: str
    visibility: Literal["public", "private"]
    hardware: str = Field(description="a SKU from `GET /v1/hardware`")
    description: str | None = Field(default=None, max_length=5000)
    github_url: Annotated[str | None, AfterValidator(_http_url)] = Field(default=None, max_length=2048)
    paper_url: Annotated[str | None, AfterValidator(_http_url)] = Field(default=None, max_length=2048)
    license_url: Annotated[str | None, AfterValidator(_http_url)] = Field(default=None, max_length=2048)
    cover_image_url: Annotated[str | None, AfterValidator(_http_url)] = Field(default=None, max_length=2048)


# Request bodies that routes read themselves (`json_body`, the multipart stream), to keep Replicate's
# exact answers to bad input: these models only document them (router/openapi.py puts them in the
# document); the services validate. Unknown fields of a create are ignored, as Replicate does.

WebhookEvent = Literal["start", "output", "logs", "completed"]


class ModelPredictionCreate(BaseModel):
    """The body of a create through a model or a deployment (its latest, or pinned, version)."""

    input: dict[str, Any] = Field(default_factory=dict,
                                  description="the model's inputs, as its version's `openapi_schema` says")
    webhook: str | None = Field(default=None, description="an http(s) URL to POST the prediction to")
    webhook_completed: str | None = Field(default=None, description="an http(s) URL told only of completion")
    webhook_events_filter: list[WebhookEvent] | None = Field(
        default=None, description="which events are sent to `webhook` (default: all)")


class PredictionCreate(ModelPredictionCreate):
    """The body of `POST /v1/predictions`."""

    version: str = Field(description="a version id, `owner/name:version` or `owner/name` (its latest version)")


class DeploymentCreate(BaseModel):
    """The body of `POST /v1/deployments` (owned by the caller's account)."""

    name: str
    model: str = Field(description="`owner/name`")
    version: str | None = Field(default=None, description="a version id (default: the model's latest)")
    hardware: str | None = Field(default=None, description="a SKU from `GET /v1/hardware` (default: the default SKU)")
    min_instances: int = Field(default=0, ge=0, le=5)
    max_instances: int = Field(default=1, ge=1, le=20)


class DeploymentUpdate(BaseModel):
    """The body of `PATCH /v1/deployments/{owner}/{name}`: at least one field; others are refused."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    version: str | None = None
    hardware: str | None = None
    min_instances: int | None = Field(default=None, ge=0, le=5)
    max_instances: int | None = Field(default=None, ge=1, le=20)


class FileUpload(BaseModel):
    """The multipart body of `POST /v1/files`, as the replicate client sends it."""

    content: bytes = Field(description="the file (its part's filename and Content-Type are kept)")
    metadata: str | None = Field(default=None, description="a JSON object, kept with the file")
    filename: str | None = Field(default=None, description="overrides the part's filename")
    type: str | None = Field(default=None, description="overrides the part's Content-Type")


class InvalidField(BaseModel):
    field: str
    reason: str


class Problem(BaseModel):
    """Every error answer: problem details (RFC 9457) as `application/problem+json`."""

    type: str | None = Field(description="always null: vendo defines no problem type URIs")
    title: str
    status: int
    detail: str
    invalid_fields: list[InvalidField] = Field(
        default_factory=list, description="on a 422, each offending field (or input, or header) and why")


# Response models: what `/openapi.json` shows for each answer. Routes build the JSON with the
# functions above (one pass, no re-validation on the hot path) and declare these as `response_model`.

T = TypeVar("T")
StatusName = Literal["starting", "processing", "succeeded", "failed", "canceled"]


class Page(BaseModel, Generic[T]):
    previous: str | None = None
    next: str | None = None
    results: list[T]


class PredictionUrls(BaseModel):
    get: str
    cancel: str
    stream: str
    web: str


class _Run(BaseModel):
    """What a prediction and a training both show."""

    id: str
    model: str
    version: str
    status: StatusName
    input: dict[str, Any] | None = None
    output: Any = None
    logs: str = ""
    error: Any = None
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    source: str | None = None
    data_removed: bool = False
    metrics: dict[str, Any] | None = None
    deadline: str | None = None
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None


class Prediction(_Run):
    deployment: str | None = None
    shared: bool | None = None  # a vendo extension: readable by anyone with its id
    urls: PredictionUrls


class TrainingUrls(BaseModel):
    get: str
    cancel: str
    stream: str


class Training(_Run):
    destination: str | None = None
    urls: TrainingUrls


class TrainingCreate(ModelPredictionCreate):
    """The body of `POST /v1/models/{owner}/{name}/versions/{version_id}/trainings`."""

    destination: str = Field(description="`owner/name` of a model of yours: the trained weights become a "
                             "new version of it")
    input: dict[str, Any] = Field(default_factory=dict,
                                  description="the trainer's inputs, as the version's `TrainingInput` says")


class Version(BaseModel):
    id: str
    created_at: str
    cog_version: str
    openapi_schema: dict[str, Any]


class Model(BaseModel):
    url: str
    owner: str
    name: str
    visibility: Literal["public", "private"]
    description: str | None = None
    github_url: str | None = None
    paper_url: str | None = None
    license_url: str | None = None
    cover_image_url: str | None = None
    run_count: int = 0
    default_example: Any = None
    latest_version: Version | None = None
    created_at: str | None = None
    is_official: bool = False
    hardware: str | None = None


class Account(BaseModel):
    type: Literal["user", "organization"]
    username: str
    name: str
    github_url: str | None = None


class AdminAccount(BaseModel):
    """An account as an admin sees it (the admin API; `GET /v1/account` keeps Replicate's shape)."""

    username: str
    type: Literal["user", "organization"]
    name: str | None = None
    created_at: str | None = None
    roles: list[str] = []
    disabled: bool = False
    orgs: list[str] = []  # the organizations it is a member of
    members: list[str] | None = None  # an organization's members
    limit_usd: float | None = None  # spend limit per billing period


class AdminAccountList(BaseModel):
    results: list[AdminAccount]


class AdminAccountCreate(BaseModel):
    username: str
    type: Literal["user", "organization"] = "user"
    name: str | None = None
    roles: list[str] = []
    limit_usd: float | str | None = None  # default: VENDO_DEFAULT_LIMIT_USD


class AdminAccountCreated(BaseModel):
    account: AdminAccount
    token: str  # in the clear, this once


class AdminAccountUpdate(BaseModel):
    roles: list[str] | None = None  # replaces the account's roles
    disabled: bool | None = None
    limit_usd: float | str | None = None  # spend limit per billing period; null (given) removes it


class AdminRotated(BaseModel):
    account: str
    token: str  # the account's one token now, in the clear, this once


class AdminMembers(BaseModel):
    organization: str
    members: list[str]


class AdminToken(BaseModel):
    id: str
    account: str
    name: str | None = None
    prefix: str | None = None
    created_at: str | None = None
    expires_at: str | None = None
    last_used_at: str | None = None


class AdminTokenList(BaseModel):
    results: list[AdminToken]


class AdminTokenCreate(BaseModel):
    account: str
    name: str | None = None
    expires_at: str | None = None  # ISO 8601


class AdminTokenCreated(AdminToken):
    token: str  # in the clear, this once


def admin_token(t) -> dict:
    return {"id": t.id, "account": t.username, "name": t.name, "prefix": t.prefix, "created_at": t.created_at,
            "expires_at": t.expires_at, "last_used_at": t.last_used_at}


class UsageRow(BaseModel):
    key: str  # the model (owner/name), the hardware SKU or the day, as `by` says
    seconds: float
    cost_usd: float
    cost_nanos: int  # exact: integer nano-dollars


class Usage(BaseModel):
    """An account's billed time and cost (a vendo extension): active seconds of its predictions at
    the per-second price of their hardware."""

    account: str
    since: str
    by: Literal["model", "hardware", "day"]
    period: str  # the current billing period
    limit_usd: float | None = None
    total: UsageRow
    results: list[UsageRow]


class FileUrls(BaseModel):
    get: str
    download: str | None = None


class FileChecksums(BaseModel):
    sha256: str
    md5: str


class File(BaseModel):
    id: str
    name: str
    content_type: str
    size: int
    etag: str
    checksums: FileChecksums
    metadata: dict[str, Any]
    created_at: str
    expires_at: str | None = None
    urls: FileUrls


class DeploymentCreator(Account):
    avatar_url: str | None = None


class DeploymentConfiguration(BaseModel):
    hardware: str
    min_instances: int
    max_instances: int


class DeploymentRelease(BaseModel):
    number: int
    model: str
    version: str
    created_at: str | None = None
    created_by: DeploymentCreator
    configuration: DeploymentConfiguration


class Deployment(BaseModel):
    owner: str
    name: str
    current_release: DeploymentRelease


class Hardware(BaseModel):
    sku: str
    name: str


class Collection(BaseModel):
    slug: str
    name: str
    description: str
    full_description: str | None = None
    models: list[Model] | None = None


class WebhookSecret(BaseModel):
    key: str


class VersionState(BaseModel):
    model: str
    version: str
    app: str
    hardware: str | None = None
    state: str
    setup_error: str | None = None
    isolation: str | None = None  # "full" | "partial" (see the README's trust model)
    isolation_reason: str | None = None
    replicas: int = 0  # running
    replicas_starting: int = 0
    queued: int = 0  # predictions created, not yet running
    running: int = 0  # predictions processing
    cold_starts_last_hour: int = 0  # replicas set up in the last hour


class Batch(BaseModel):
    id: str
    account: str
    model: str
    input: str
    output: str
    status: Literal["running", "succeeded", "failed", "canceled"]
    total: int | None = None
    done: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    concurrency: int = 0
    job_id: str | None = None
    error: str | None = None
    created_at: str
    updated_at: str | None = None


class ClusterStatus(BaseModel):
    versions: list[VersionState]
    redis: str | None = None  # admins only
    storage: str | None = None  # admins only
    dashboard: str | None = None  # admins only: the Ray dashboard (jobs, Serve, Grafana panels)
    serve_apps: int
