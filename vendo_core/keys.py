"""Every Redis key name vendo uses, built in one place (general to specific)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "vendo:"

    def prediction(self, pid: str) -> str:
        return f"{self.prefix}prediction:{pid}"

    def prediction_events(self, pid: str) -> str:
        return f"{self.prefix}prediction:{pid}:events"

    def prediction_logs(self, pid: str) -> str:
        return f"{self.prefix}prediction:{pid}:logs"

    def prediction_output(self, pid: str) -> str:
        return f"{self.prefix}prediction:{pid}:output"

    def account_predictions(self, username: str) -> str:
        return f"{self.prefix}account:{username}:predictions"

    def account_trainings(self, username: str) -> str:
        """Zset: the account's trainings by creation time (kept apart from its predictions)."""
        return f"{self.prefix}account:{username}:trainings"

    def account_queued(self, username: str) -> str:
        """Zset: the account's predictions created and maybe still `starting` (pruned lazily)."""
        return f"{self.prefix}account:{username}:queued"

    def account(self, username: str) -> str:
        return f"{self.prefix}account:{username}"

    def accounts(self) -> str:
        return f"{self.prefix}accounts"

    def token(self, token_sha256: str) -> str:
        return f"{self.prefix}token:{token_sha256}"

    def session(self, sid_sha256: str) -> str:
        """Hash: a web session (by the sha256 of its cookie): its token's digest and CSRF secret."""
        return f"{self.prefix}session:{sid_sha256}"

    def account_tokens(self, username: str) -> str:
        """Set: the sha256 digests of the account's API tokens."""
        return f"{self.prefix}account:{username}:tokens"

    def token_ids(self) -> str:
        """Hash: token id (`tok_…`) → the token's sha256 digest."""
        return f"{self.prefix}token-ids"

    def org_members(self, org: str) -> str:
        """Set: the usernames of an organization's members."""
        return f"{self.prefix}account:{org}:members"

    def account_orgs(self, username: str) -> str:
        """Set: the organizations an account is a member of."""
        return f"{self.prefix}account:{username}:orgs"

    def metrics(self) -> str:
        """Hash of the platform's Prometheus counts (`vendo_core.metrics`), shared by every replica."""
        return f"{self.prefix}metrics"

    def replica_starts(self, version_id: str) -> str:
        """Zset of a version's replica setups (member `<end>:<pid>`, scored by when it ended), a day deep."""
        return f"{self.prefix}version:{version_id}:replica-starts"

    def batch(self, username: str, batch_id: str) -> str:
        """Hash of one batch job's record (ids are the submitter's, so they live under the account)."""
        return f"{self.prefix}account:{username}:batch:{batch_id}"

    def account_batches(self, username: str) -> str:
        return f"{self.prefix}account:{username}:batches"

    def usage_prefix(self) -> str:
        """What `usage` keys start with (transition.lua builds them from the prediction's account)."""
        return f"{self.prefix}usage:"

    def usage(self, username: str, period: str) -> str:
        """Hash: an account's usage in a billing period: `ms|day|model|hardware` and
        `nanos|day|model|hardware` (billed milliseconds, nano-dollars), `total_ms`, `total_nanos`."""
        return f"{self.usage_prefix()}{username}:{period}"

    def auth_channel(self) -> str:
        """Pub/sub: a token digest (or "*") whose cached account every router drops at once."""
        return f"{self.prefix}auth-changed"

    def catalogue_channel(self) -> str:
        """Pub/sub: a model (owner/name, or "*") whose cached versions every router drops at once
        (a version or the model was deleted)."""
        return f"{self.prefix}catalogue-changed"

    def rate_limit(self, token_sha256: str, bucket: str) -> str:
        """String: a token's GCRA theoretical arrival time (ms) for one bucket (`creates`, `requests`)."""
        return f"{self.prefix}ratelimit:{token_sha256}:{bucket}"

    def webhook_secret(self, username: str) -> str:
        """String: the account's `whsec_…` webhook signing secret."""
        return f"{self.prefix}account:{username}:webhook_secret"

    def webhooks(self) -> str:
        """Stream + consumer group: pending webhook deliveries (`prediction`, `event` per entry)."""
        return f"{self.prefix}webhooks"

    def running(self) -> str:
        """Sorted set: processing predictions scored by their replica's heartbeat deadline."""
        return f"{self.prefix}running"

    def dispatch(self) -> str:
        """Sorted set: starting predictions scored by the number of the router dispatching them."""
        return f"{self.prefix}dispatch"

    def routers(self) -> str:
        """Sorted set: router numbers scored by their lease deadline (one renewal per router, however
        many predictions it holds)."""
        return f"{self.prefix}routers"

    def router_seq(self) -> str:
        """Counter: the last router number given out."""
        return f"{self.prefix}router-seq"

    def model(self, owner: str, name: str) -> str:
        return f"{self.prefix}model:{owner}/{name}"

    def model_versions(self, owner: str, name: str) -> str:
        return f"{self.prefix}model:{owner}/{name}:versions"

    def models(self) -> str:
        """Sorted set: every model (`owner/name`) scored by its creation time."""
        return f"{self.prefix}models"

    def models_sorted(self, sort_by: str, private_owner: str | None = None) -> str:
        """Sorted set: the public models (or one owner's private ones) scored by `sort_by`
        (`model_created_at`, `latest_version_created_at`), so a listing merges two of them."""
        scope = f"private:{private_owner}" if private_owner else "public"
        return f"{self.prefix}models:by:{sort_by}:{scope}"

    def models_indexed(self) -> str:
        """String: set once the `models_sorted` indexes have been built from `models`."""
        return f"{self.prefix}models:indexed"

    def version(self, version_id: str) -> str:
        return f"{self.prefix}version:{version_id}"

    def version_readme(self, version_id: str) -> str:
        """String: the version's README, apart from its hash (which every prediction reads)."""
        return f"{self.prefix}version:{version_id}:readme"

    def app_last_used(self) -> str:
        """Sorted set: Serve app name scored by the last time a prediction used it."""
        return f"{self.prefix}apps:last_used"

    def app_inflight(self, app: str) -> str:
        """Counter of predictions dispatched to an app and not yet finished."""
        return f"{self.prefix}app:{app}:inflight"

    def app_lock(self, app: str) -> str:
        return f"{self.prefix}lock:app:{app}"

    def package_lock(self, digest: str) -> str:
        return f"{self.prefix}lock:package:{digest}"

    def package_versions(self, digest: str) -> str:
        """Set: the live versions whose package is `packages/<digest>.tar.gz` (stored once)."""
        return f"{self.prefix}package:{digest}:versions"

    def cancel_channel(self) -> str:
        return f"{self.prefix}cancel"

    def deadlines(self) -> str:
        """Sorted set: predictions created with Cancel-After, scored by their deadline."""
        return f"{self.prefix}deadlines"

    def retention(self) -> str:
        """Sorted set: finished predictions scored by when their input and output are removed."""
        return f"{self.prefix}retention"

    def file(self, file_id: str) -> str:
        return f"{self.prefix}file:{file_id}"

    def account_files(self, username: str) -> str:
        return f"{self.prefix}account:{username}:files"

    def files_expiring(self) -> str:
        """Sorted set: uploaded files scored by their expiry."""
        return f"{self.prefix}files:expiring"

    def deployment(self, owner: str, name: str) -> str:
        """Hash: a named deployment's current release (model, version, hardware, instances)."""
        return f"{self.prefix}deployment:{owner}/{name}"

    def account_deployments(self, username: str) -> str:
        """Sorted set: an account's deployments by creation time."""
        return f"{self.prefix}account:{username}:deployments"

    def deployments(self) -> str:
        """Set: every deployment (owner/name), for the reconcile loop."""
        return f"{self.prefix}deployments"

    def deployments_deleted(self) -> str:
        """Set: deleted deployments (owner/name) whose Serve app may still be up."""
        return f"{self.prefix}deployments:deleted"


# Object-store keys: relative "/"-separated paths (the store adds its own prefix). Only these
# functions format them.

def prediction_files(pid: str) -> str:
    """The folder of a prediction's own files (its outputs), removed by retention."""
    return f"predictions/{pid}/"


def package_key(digest: str) -> str:
    """A pushed package's bytes, stored once by digest whatever models it is a version of."""
    return f"packages/{digest}.tar.gz"


def weights_key(sha256: str, filename: str) -> str:
    """A training's weights, stored once by digest and kept as long as versions use them (not
    subject to predictions' retention)."""
    return f"weights/{sha256}/{filename}"


def file_object(file_id: str) -> str:
    """An uploaded file's bytes."""
    return f"files/{file_id}"
