"""Per-prediction input preparation and output encoding for in-process Cog predictors.

`prepare_input` wraps `cog._inspector.check_input` (coercion, defaults, constraints) and closes
the gaps it leaves when nothing sits in front of it: legacy `Input(default=None)` fields, local
paths and private URLs passed as files, non-list values for list inputs, and downloads.
`encode_output` turns whatever the predictor returned into JSON, handing files to the caller.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import os
import pathlib
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import cog
from cog import _adt as adt
from cog import _inspector
from cog.types import URLPath

from vendo_core.errors import InvalidInput
from vendo_core.netpolicy import NonPublicAddress, check_public_sync

if TYPE_CHECKING:
    import httpx


class Loaded(Protocol):
    """What input preparation needs of a loaded predictor (`cog_runtime.LoadedPredictor`)."""

    inputs: dict[str, adt.InputField]

_FILE_PRIMITIVES = (adt.PrimitiveType.PATH, adt.PrimitiveType.FILE)
_REPEATED = (adt.Repetition.REPEATED, adt.Repetition.OPTIONAL_REPEATED)
# Reasons check_input produces that are safe to show; anything else (e.g. int()'s message, which
# echoes the value) is replaced by cog's generic "Invalid value for type X".
_MAX_REDIRECTS = 5
_KNOWN_REASONS = ("Invalid value", "Field required", "fails constraint", "does not match", "missing value")


PutFile = Callable[[str | bytes, str], str]


class PrivateURLRefused(InvalidInput, ValueError):
    """A file input URL whose host resolves to a loopback, private or link-local address."""


def _type_name(ft: adt.FieldType) -> str:
    # cog names the element type (int, Path) in normalization errors, not Optional[int].
    return ft.python_type_name() if ft.union_variants is not None else ft.primitive.python_type_name()


def _check_public(name: str, url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        raise InvalidInput(name, "Invalid value for type Path")
    try:
        check_public_sync(url)
    except NonPublicAddress:
        raise PrivateURLRefused(name, f"URL host {host!r} resolves to a non-public address") from None
    except (OSError, ValueError):
        raise InvalidInput(name, f"cannot resolve host {host!r}") from None


def _file_value(name: str, primitive: adt.PrimitiveType, value: Any, resolve_url: Any, allow_private: bool) -> Any:
    if isinstance(value, (pathlib.PurePath, io.IOBase)):
        return value  # trusted callers may pass local files directly
    if not isinstance(value, str):
        raise InvalidInput(name, f"Invalid value for type {primitive.python_type_name()}")
    local = resolve_url(value) if resolve_url is not None else None
    if local:
        # The platform's own file: use it in place instead of downloading it over HTTP.
        return cog.Path(local) if primitive is adt.PrimitiveType.PATH else open(local, "rb")
    scheme = urllib.parse.urlsplit(value).scheme.lower()
    if scheme in ("http", "https"):
        if not allow_private:
            _check_public(name, value)
        return value
    if scheme == "data":
        return value
    # cog would turn any other string into a local path: never let a caller name server files.
    raise InvalidInput(name, f"Invalid value for type {primitive.python_type_name()}")


def _pre_check(name: str, ft: adt.FieldType, value: Any, resolve_url: Any, allow_private: bool) -> Any:
    if value is None or ft.union_variants is not None:
        return value  # check_input handles null and unions correctly

    def one(v: Any) -> Any:
        if ft.primitive in _FILE_PRIMITIVES:
            return _file_value(name, ft.primitive, v, resolve_url, allow_private)
        if ft.primitive is adt.PrimitiveType.SECRET and not isinstance(v, (str, cog.Secret)):
            raise InvalidInput(name, "Invalid value for type Secret")
        if ft.primitive is adt.PrimitiveType.ANY and not isinstance(v, dict):
            raise InvalidInput(name, "Invalid value for type Any")  # the schema says "object"
        return v

    if ft.repetition in _REPEATED:
        if not isinstance(value, list):  # check_input would iterate a string character by character
            raise InvalidInput(name, f"Invalid value for type {_type_name(ft)}")
        return [one(v) for v in value]
    return one(value)


def _split_error(message: str, names: list[str]) -> tuple[str, str]:
    for name in sorted(names, key=len, reverse=True):
        if message.startswith(name + ": "):
            return name, message[len(name) + 2 :]
        if message.startswith(name + " "):
            return name, message[len(name) + 1 :]
    return "", message


@dataclass(frozen=True)
class FetchLimits:
    """How much of a URL input is downloaded, and for how long, before the input is refused."""

    max_bytes: int = 1 << 30
    timeout_s: float = 300.0


def _client(allow_private: bool) -> httpx.Client:
    import httpx  # ~0.15 s to import: only a prediction that downloads a URL input pays for it

    from vendo_core.publicnet import PublicOnlyTransport

    transport = None if allow_private else PublicOnlyTransport()
    return httpx.Client(transport=transport, follow_redirects=False, trust_env=False, timeout=httpx.Timeout(10.0))


def _fetch(name: str, url: str, suffix: str, allow_private: bool, limits: FetchLimits) -> cog.Path:
    # Not URLPath.convert(): it would follow redirects, and a public URL that redirects to a
    # private address would slip past the check. Every hop is checked here, and the connection
    # goes to the address that was checked (no second lookup a rebinding name could answer).
    headers = {"User-Agent": os.environ["COG_USER_AGENT"]} if os.environ.get("COG_USER_AGENT") else {}
    with _client(allow_private) as client:
        for _ in range(_MAX_REDIRECTS + 1):
            if not allow_private:
                _check_public(name, url)
            try:
                with client.stream("GET", url, headers=headers) as resp:
                    if resp.is_redirect:
                        url = urllib.parse.urljoin(url, resp.headers["location"])
                        continue
                    resp.raise_for_status()
                    with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as dest:
                        try:
                            _copy_limited(name, resp.iter_bytes(), dest, limits)  # as it arrives
                        except BaseException:
                            os.unlink(dest.name)
                            raise
                    return cog.Path(dest.name)
            except NonPublicAddress as e:
                raise PrivateURLRefused(name, str(e)) from None
    raise InvalidInput(name, "cannot download file: too many redirects")


def _copy_limited(name: str, chunks: Any, dest: Any, limits: FetchLimits) -> None:
    """Copy at most `limits.max_bytes` (decoded), finishing within `limits.timeout_s` in all
    (chunks come as they arrive, so a sender that trickles cannot stretch the download)."""
    deadline = time.monotonic() + limits.timeout_s
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limits.max_bytes:
            raise InvalidInput(name, f"cannot download file: larger than {limits.max_bytes} bytes")
        if time.monotonic() > deadline:
            raise InvalidInput(name, f"cannot download file: it took longer than {limits.timeout_s:g}s")
        dest.write(chunk)


def _download(name: str, value: Any, temp_files: list[str] | None, allow_private: bool,
              limits: FetchLimits) -> Any:
    if isinstance(value, list):
        return [_download(name, v, temp_files, allow_private, limits) for v in value]
    if isinstance(value, URLPath):
        try:
            if value.source.startswith(("http://", "https://")):
                local = _fetch(name, value.source, value.filename, allow_private, limits)
            else:
                local = value.convert()  # data: URI, decoded in memory already
        except InvalidInput:
            raise
        except Exception as exc:
            raise InvalidInput(name, f"cannot download file: {type(exc).__name__}") from exc
        if temp_files is not None:
            temp_files.append(str(local))
        return local
    return value


def prepare_input(
    loaded: Loaded,
    payload: dict,
    resolve_url: Callable[[str], str | None] | None = None,
    *,
    allow_private_urls: bool = False,
    temp_files: list[str] | None = None,
    fetch_limits: FetchLimits = FetchLimits(),
) -> dict:
    """Turn a prediction's JSON input into the kwargs for `loaded.call`.

    Unknown keys are dropped (before check_input, which would print about them), defaults are
    filled in, legacy `Input(default=None)` fields default to None, and file inputs become local
    `cog.Path`s: `resolve_url(url)` may map a URL to a local path (the platform's own files);
    other http(s) and data: URLs are downloaded to temp files, whose paths are appended to
    `temp_files` (when given) for the caller to delete afterwards. http(s) URLs whose host is
    loopback/private/link-local raise PrivateURLRefused unless `allow_private_urls`; a download
    past `fetch_limits` (size or total time) is refused and its partial file removed. Raises
    InvalidInput.
    """
    if not isinstance(payload, dict):
        raise InvalidInput("input", "must be an object")
    inputs = loaded.inputs
    values = {
        name: _pre_check(name, inputs[name].type, value, resolve_url, allow_private_urls)
        for name, value in payload.items()
        if name in inputs
    }
    try:
        kwargs = _inspector.check_input(inputs, values)
    except TypeError:
        # int(None) and friends escape check_input as TypeError without the field's name.
        for name, value in values.items():
            try:
                inputs[name].type.normalize(value)
            except (TypeError, ValueError):
                raise InvalidInput(name, f"Invalid value for type {_type_name(inputs[name].type)}") from None
        raise
    except ValueError as exc:
        field, reason = _split_error(str(exc), list(inputs))
        if field and not reason.startswith(_KNOWN_REASONS):
            reason = f"Invalid value for type {_type_name(inputs[field].type)}"
        raise InvalidInput(field, reason) from None
    for name, value in values.items():
        # a union takes JSON values as they are: 1 for `str | float` stays 1, as in Cog's server
        if (inputs[name].type.union_variants is not None and type(value) is int
                and type(kwargs.get(name)) is float and kwargs[name] == value):
            kwargs[name] = value
    return {name: _download(name, value, temp_files, allow_private_urls, fetch_limits)
            for name, value in kwargs.items()}


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


def _file_name(name: Any, index: int | None, ext: str) -> str:
    if isinstance(name, (str, os.PathLike)):
        base = os.path.basename(os.fspath(name))
        if base:
            return base
    return f"output.{index}.{ext}" if index is not None else f"output.{ext}"


def encode_output(value: Any, put_file: PutFile, *, index: int | None = None) -> Any:
    """Encode a predictor's output (or one streamed item) into JSON-able values.

    Files go through `put_file(local_path_or_bytes, filename)`, whose return string is placed in
    the JSON. Paths keep their base name; nameless file objects are called `output.<i>.<ext>` in
    lists (`output.<ext>` alone). Pass `index` for items of a streamed iterator.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, cog.Secret):
        return value.get_secret_value()
    if isinstance(value, enum.Enum):
        return encode_output(value.value, put_file, index=index)
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        ext = os.path.splitext(path)[1].lstrip(".") or "bin"
        return put_file(path, _file_name(path, index, ext))
    if isinstance(value, io.IOBase):
        if value.seekable():
            value.seek(0)
        data = value.read()
        data = data.encode() if isinstance(data, str) else data
        name = getattr(value, "name", None)
        ext = os.path.splitext(name)[1].lstrip(".") if isinstance(name, str) else ""
        return put_file(data, _file_name(name, index, ext or "bin"))
    if isinstance(value, (bytes, bytearray)):
        return put_file(bytes(value), _file_name(None, index, "bin"))
    if hasattr(value, "model_dump") and callable(value.model_dump):  # pydantic v2
        return encode_output(value.model_dump(), put_file, index=index)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # cog.BaseModel
        return {f.name: encode_output(getattr(value, f.name), put_file) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): encode_output(v, put_file) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [encode_output(v, put_file, index=i) for i, v in enumerate(value)]
    if hasattr(value, "isoformat"):  # datetime/date, as coglet does
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy arrays and scalars, without importing numpy
        return encode_output(value.tolist(), put_file, index=index)
    raise TypeError(f"cannot encode output of type {type(value).__name__}")
