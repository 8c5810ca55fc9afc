"""Typed errors under one root. Each carries its data; the HTTP layer maps them to problem details."""

from __future__ import annotations


class VendoError(Exception):
    """Root of every error vendo raises on purpose."""

    status = 500
    title = "Internal error"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail

    def problem(self) -> dict:
        return {"type": None, "title": self.title, "status": self.status, "detail": self.detail}

    def headers(self) -> dict[str, str]:
        """HTTP headers that go with the problem response."""
        return {}

    def __reduce__(self):
        # subclasses take their own arguments, not the message: rebuilt from their state, so an
        # error crosses a process boundary (a Serve handle call) as itself
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[VendoError], args: tuple, state: dict) -> VendoError:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class Unauthenticated(VendoError):
    status = 401
    title = "Unauthenticated"

    def __init__(self):
        super().__init__("You did not pass a valid authentication token")


class NotFound(VendoError):
    status = 404
    title = "Not found"

    def __init__(self, what: str, ident: str):
        super().__init__(f"{what} not found: {ident}")
        self.what = what
        self.ident = ident


class PredictionNotFound(NotFound):
    def __init__(self, prediction_id: str):
        super().__init__("Prediction", prediction_id)


class ModelNotFound(NotFound):
    def __init__(self, ref: str):
        super().__init__("Model", ref)


class TrainingNotFound(NotFound):
    def __init__(self, training_id: str):
        super().__init__("Training", training_id)


class DestinationNotFound(NotFound):
    """A training's destination that does not exist or is not the caller's (Replicate's words)."""

    def __init__(self, ref: str):
        VendoError.__init__(self, "The specified training destination does not exist")
        self.what, self.ident = "Model", ref


class VersionNotFound(NotFound):
    def __init__(self, ref: str):
        super().__init__("Version", ref)


class FieldError(VendoError):
    """A 422 that names the offending field and says why."""

    status = 422

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason

    def problem(self) -> dict:
        body = super().problem()
        body["invalid_fields"] = [{"field": self.field, "reason": self.reason}]
        return body


class InvalidInput(FieldError):
    """A prediction input that fails the version's schema; `field` names the input."""

    title = "Input validation failed"


class InvalidRequest(FieldError):
    """A request body or parameter that is malformed (not a model input)."""

    title = "Invalid request"


class Forbidden(VendoError):
    """The caller may see the object but not change it (another account's public model), or lacks
    the role an action needs."""

    status = 403
    title = "Forbidden"


class Conflict(VendoError):
    status = 409
    title = "Conflict"


class RateLimited(VendoError):
    """A token over its per-minute limit for `bucket`; `retry_after_s` is whole seconds."""

    status = 429
    title = "Too many requests"

    def __init__(self, retry_after_s: int, *, bucket: str = "requests", limit_per_min: int | None = None):
        unit = "second" if retry_after_s == 1 else "seconds"
        super().__init__(f"Request was throttled. Expected available in {retry_after_s} {unit}.")
        self.retry_after_s = retry_after_s
        self.bucket = bucket
        self.limit_per_min = limit_per_min

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class PayloadTooLarge(VendoError):
    status = 413
    title = "Payload too large"

    def __init__(self, limit_bytes: int):
        super().__init__(f"Request body must be at most {limit_bytes} bytes")
        self.limit_bytes = limit_bytes


class TooManyOpen(VendoError):
    """An account holding as many open streams and waiting creates as it may."""

    status = 429
    title = "Too many requests"

    def __init__(self, username: str, limit: int):
        super().__init__(f"account {username!r} already holds {limit} open streams and waiting requests, "
                         "the most allowed at once; close one, or create without `Prefer: wait`")
        self.limit = limit

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class SpendLimitReached(VendoError):
    """An account whose spend in the current billing period has reached its limit."""

    status = 402
    title = "Payment required"

    def __init__(self, username: str, spent_usd: str, limit_usd: str, period: str):
        super().__init__(f"account {username!r} has spent ${spent_usd} in billing period {period}, its limit "
                         f"is ${limit_usd}: new predictions are refused until an admin raises it "
                         f"(`vendo accounts set {username} --limit-usd N`) or the period ends")


class TooManyQueued(VendoError):
    """An account with as many predictions waiting for a replica as it may have."""

    status = 429
    title = "Too many requests"

    def __init__(self, username: str, limit: int):
        super().__init__(f"account {username!r} has {limit} predictions waiting to start, the most allowed; "
                         "retry when some have started")
        self.limit = limit

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class UnsupportedMediaType(VendoError):
    status = 415
    title = "Unsupported media type"

    def __init__(self, got: str, expected: str = "application/json"):
        super().__init__(f"expected a body of type {expected}, got {got!r}")
        self.got = got


class PackageInvalid(VendoError):
    """A pushed Cog project that cannot be loaded or introspected."""

    status = 422
    title = "Invalid model package"
