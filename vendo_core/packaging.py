"""Cog project packages: a deterministic tar.gz of a project directory, and safe unpacking.

The package digest is the sha256 of a canonical manifest of the contents: one line per file, link and
empty directory, sorted by path, giving its type, path, normalized mode (0644/0755) and the sha256 of
a file's bytes or a link's target. It does not depend on mtimes, owners, umask, tar headers or gzip
details, so the same contents always give the same digest, and `package_digest` recomputes it from
any archive of them. A version's id is derived from its model and this digest (`ids.version_id`).
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import os
import posixpath
import re
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from vendo_core.errors import PackageInvalid

ALWAYS_SKIPPED = {".git", "__pycache__", ".cog", ".venv"}
IGNORE_FILES = (".dockerignore", ".cogignore")
_CHUNK = 1024 * 1024


class _Rules:
    """.dockerignore semantics: later patterns win, `!` re-includes, a matched directory covers its
    contents, `**` spans directories, `*` and `?` stay inside one path segment."""

    def __init__(self, lines: list[str]):
        self.rules: list[tuple[bool, re.Pattern]] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = posixpath.normpath(line[1:].strip() if negate else line).lstrip("/")
            if pattern in ("", "."):
                continue
            self.rules.append((negate, re.compile(_translate(pattern))))
        self.has_negations = any(negate for negate, _ in self.rules)

    def ignored(self, rel: str) -> bool:
        parts = rel.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for negate, regex in self.rules:
            if any(regex.fullmatch(c) for c in candidates):
                result = not negate
        return result


def _translate(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def _load_rules(root: Path) -> _Rules:
    lines: list[str] = []
    for name in IGNORE_FILES:
        path = root / name
        if path.is_file():
            lines += path.read_text(errors="replace").splitlines()
    return _Rules(lines)


def _skipped(name: str) -> bool:
    return name in ALWAYS_SKIPPED or fnmatch.fnmatch(name, "*.pyc")


def _walk(root: Path, rules: _Rules) -> list[str]:
    """Relative posix paths of every entry to package, sorted."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        keep = []
        for name in dirnames:
            rel = rel_dir + name
            if _skipped(name):
                continue
            if (root / rel).is_symlink():
                filenames.append(name)  # packaged as a link, never followed
                continue
            if rules.ignored(rel) and not rules.has_negations:
                continue  # prune: nothing below can come back
            keep.append(name)
            if not rules.ignored(rel):
                found.append(rel)
        dirnames[:] = keep
        found += [rel_dir + n for n in filenames if not _skipped(n) and not rules.ignored(rel_dir + n)]
    return sorted(found)


class _HashingReader:
    def __init__(self, f, digest):
        self.f, self.digest = f, digest

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.digest.update(data)
        return data


def _mode(st_mode: int) -> int:
    return 0o755 if stat.S_ISDIR(st_mode) or st_mode & 0o111 else 0o644


def _manifest_id(entries: list[tuple[str, str, int, str]]) -> str:
    """sha256 over (kind, path, mode, detail) entries; directories count only when empty."""
    names = {name for _, name, _, _ in entries}
    parents = {posixpath.dirname(n) for n in names}
    digest = hashlib.sha256()
    for kind, name, mode, detail in sorted(entries, key=lambda e: e[1]):
        if kind == "d" and name in parents:
            continue
        digest.update(f"{kind}\0{name}\0{mode:o}\0{detail}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _add(tar: tarfile.TarFile, root: Path, rel: str, used: int, limit: int | None):
    """Write one entry with zeroed metadata (a file only if `used` + its size stays within `limit`);
    return its manifest entry and its size."""
    path = root / rel
    st = path.lstat()
    info = tarfile.TarInfo(rel)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    info.mode = _mode(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        if posixpath.isabs(target) or resolved == ".." or resolved.startswith("../"):
            raise PackageInvalid(f"{rel} links outside the project: {target}")
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        tar.addfile(info)
        return ("l", rel, info.mode, target), 0
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        return ("d", rel, info.mode, ""), 0
    if not stat.S_ISREG(st.st_mode):
        raise PackageInvalid(f"{rel} is not a regular file, directory or link")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        info.size = os.fstat(f.fileno()).st_size
        if limit is not None and used + info.size > limit:
            raise PackageInvalid(f"project is larger than {limit} bytes")
        tar.addfile(info, _HashingReader(f, digest))
    return ("f", rel, info.mode, digest.hexdigest()), info.size


def pack_project(project_dir: str | Path, max_bytes: int | None = None) -> tuple[bytes, str]:
    """Package a Cog project directory; return (tar.gz bytes, version id). PackageInvalid if it has
    no cog.yaml, holds a link leading outside itself or a special file, or exceeds `max_bytes`
    (counted on the file contents and on the archive)."""
    root = Path(project_dir).resolve()
    cog_yaml = root / "cog.yaml"
    if not cog_yaml.is_file() or cog_yaml.is_symlink():
        raise PackageInvalid(f"{project_dir} is not a Cog project: no cog.yaml file")
    entries = _walk(root, _load_rules(root))
    if "cog.yaml" not in entries:
        raise PackageInvalid("cog.yaml is excluded by an ignore file")
    manifest: list[tuple[str, str, int, str]] = []
    total = 0
    buffer = io.BytesIO()
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=6)
    with gz, tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in entries:
            entry, size = _add(tar, root, rel, total, max_bytes)
            manifest.append(entry)
            total += size
    data = buffer.getvalue()
    if max_bytes is not None and len(data) > max_bytes:
        raise PackageInvalid(f"package is larger than {max_bytes} bytes")
    return data, _manifest_id(manifest)


def _open(data: bytes) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise PackageInvalid(f"not a tar archive: {e}") from e


@dataclass(frozen=True)
class UnpackLimits:
    """What a package may unpack to: total bytes, files, and how far it may inflate. The ratio is
    judged only past `ratio_floor_bytes`, so a small project of text (which compresses well) always
    passes, while a few megabytes that inflate to gigabytes of zeros (a bomb) never do; real weights
    barely compress, so a large archive of them passes."""

    max_bytes: int = 64 * 2**30
    max_files: int = 100_000
    max_ratio: float = 100.0
    ratio_floor_bytes: int = 256 * 2**20

    @classmethod
    def of(cls, settings) -> UnpackLimits:
        return cls(max_bytes=settings.max_unpacked_bytes, max_files=settings.max_package_files,
                   max_ratio=settings.max_compression_ratio)

    def check(self, unpacked: int, files: int, packed: int) -> None:
        if unpacked > self.max_bytes:
            raise PackageInvalid(f"package unpacks to more than {self.max_bytes} bytes")
        if files > self.max_files:
            raise PackageInvalid(f"package holds more than {self.max_files} files")
        if unpacked > self.ratio_floor_bytes and unpacked > self.max_ratio * max(packed, 1):
            raise PackageInvalid(f"package inflates more than {self.max_ratio:g} times ({packed} bytes "
                                 f"to over {unpacked}): refused as a decompression bomb")


def _check_members(tar: tarfile.TarFile, max_bytes: int | None, limits: UnpackLimits | None = None,
                   packed: int = 0) -> list[tarfile.TarInfo]:
    """Every member, checked as its header is read: a bomb is refused at its first header, before
    its data is ever inflated."""
    members: list[tarfile.TarInfo] = []
    total = 0
    try:
        while (m := tar.next()) is not None:
            name = m.name
            norm = posixpath.normpath(name)
            if name.startswith("/") or norm == ".." or norm.startswith("../") or "\0" in name:
                raise PackageInvalid(f"unsafe path in package: {name!r}")
            if m.issym():
                target = posixpath.normpath(posixpath.join(posixpath.dirname(norm), m.linkname))
                if m.linkname.startswith("/") or target == ".." or target.startswith("../"):
                    raise PackageInvalid(f"link leads outside the package: {name!r} -> {m.linkname!r}")
            elif m.islnk():
                raise PackageInvalid(f"hard link in package: {name!r}")
            elif not (m.isfile() or m.isdir()):
                raise PackageInvalid(f"special file in package: {name!r}")
            total += m.size
            members.append(m)
            if max_bytes is not None and total > max_bytes:
                raise PackageInvalid(f"package unpacks to more than {max_bytes} bytes")
            if limits is not None:
                limits.check(total, len(members), packed)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise PackageInvalid(f"corrupt package: {e}") from e
    if not any(posixpath.normpath(m.name) == "cog.yaml" and m.isfile() for m in members):
        raise PackageInvalid("package has no cog.yaml at its top")
    return members


def unpack_package(data: bytes, dest: str | Path, max_bytes: int | None = None,
                   limits: UnpackLimits | None = None) -> Path:
    """Extract a package into `dest` (created), refusing anything that could write outside it or
    unpack past `limits` (checked on the headers, before anything is written)."""
    if max_bytes is not None and len(data) > max_bytes:
        raise PackageInvalid(f"package is larger than {max_bytes} bytes")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with _open(data) as tar:
        members = _check_members(tar, max_bytes, limits, len(data))
        try:
            tar.extractall(dest, members=members, filter="data")
        except (tarfile.TarError, OSError) as e:
            raise PackageInvalid(f"cannot unpack package: {e}") from e
    return dest


def package_digest(data: bytes, max_bytes: int | None = None, limits: UnpackLimits | None = None) -> str:
    """The digest of an archive's contents: equal to what `pack_project` gave for them."""
    manifest: list[tuple[str, str, int, str]] = []
    with _open(data) as tar:
        for m in _check_members(tar, max_bytes, limits, len(data)):
            name = posixpath.normpath(m.name)
            if name == ".":
                continue
            if m.isdir():
                manifest.append(("d", name, 0o755, ""))
            elif m.issym():
                manifest.append(("l", name, 0o777, m.linkname))
            else:
                digest = hashlib.sha256()
                f = tar.extractfile(m)
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                manifest.append(("f", name, _mode(m.mode), digest.hexdigest()))
    return _manifest_id(manifest)


def read_member(data: bytes, name: str, max_bytes: int = 1024 * 1024) -> bytes:
    """The bytes of one regular file in a package (e.g. "cog.yaml"); PackageInvalid if absent."""
    with _open(data) as tar:
        try:
            for m in tar:
                if posixpath.normpath(m.name) == name and m.isfile():
                    if m.size > max_bytes:
                        raise PackageInvalid(f"{name} is larger than {max_bytes} bytes")
                    return tar.extractfile(m).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise PackageInvalid(f"corrupt package: {e}") from e
    raise PackageInvalid(f"package has no {name}")
