import gzip
import io
import os
import tarfile

import pytest

from vendo_core.errors import PackageInvalid
from vendo_core.packaging import UnpackLimits, pack_project, package_digest, read_member, unpack_package


def _project(root, files=None):
    files = files or {
        "cog.yaml": "predict: predict.py:Predictor\n",
        "predict.py": "class Predictor: ...\n",
        "lib/helpers.py": "X = 1\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _names(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return sorted(m.name for m in tar.getmembers())


def _tar(members):
    """A tar.gz of (TarInfo, bytes | None) pairs, with a cog.yaml first."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        cog = tarfile.TarInfo("cog.yaml")
        cog.size = 3
        tar.addfile(cog, io.BytesIO(b"x: "))
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def test_deterministic(tmp_path):
    root = _project(tmp_path / "p")
    data1, id1 = pack_project(root)
    data2, id2 = pack_project(root)
    assert data1 == data2 and id1 == id2
    assert len(id1) == 64 and int(id1, 16) >= 0
    assert gzip.decompress(data1)  # a valid gzip stream
    assert data1[4:8] == b"\0\0\0\0"  # gzip mtime is zero


def test_id_ignores_mtime_owner_and_location(tmp_path):
    root = _project(tmp_path / "p")
    data, pid = pack_project(root)
    os.utime(root / "predict.py", (1_000_000, 1_000_000))
    os.utime(root / "lib", (2_000_000, 2_000_000))
    data2, pid2 = pack_project(root)
    assert (data2, pid2) == (data, pid)
    other = _project(tmp_path / "elsewhere" / "q")
    assert pack_project(other)[1] == pid
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar.getmembers():
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")


def test_id_changes_with_content(tmp_path):
    root = _project(tmp_path / "p")
    _, pid = pack_project(root)
    (root / "predict.py").write_text("class Predictor: pass\n")
    _, changed = pack_project(root)
    assert changed != pid
    (root / "predict.py").write_text("class Predictor: ...\n")
    assert pack_project(root)[1] == pid
    (root / "predict.py").chmod(0o755)
    assert pack_project(root)[1] != pid
    (root / "predict.py").chmod(0o644)
    (root / "predict.py").rename(root / "predict2.py")
    assert pack_project(root)[1] != pid


def test_package_id_matches_and_ignores_gzip(tmp_path):
    root = _project(tmp_path / "p")
    data, pid = pack_project(root)
    assert package_digest(data) == pid
    recompressed = gzip.compress(gzip.decompress(data), compresslevel=1, mtime=12345)
    assert recompressed != data and package_digest(recompressed) == pid
    # An archive of the same contents made another way (mtimes, owner, "./" names) has the same id.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        tar.add(root, arcname=".")
    assert package_digest(buf.getvalue()) == pid


def test_always_skipped(tmp_path):
    root = _project(tmp_path / "p")
    for rel in [
        ".git/config",
        "__pycache__/a.cpython-311.pyc",
        "lib/__pycache__/x.pyc",
        ".cog/tmp",
        ".venv/bin/python",
        "stray.pyc",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("junk")
    data, pid = pack_project(root)
    assert _names(data) == ["cog.yaml", "lib", "lib/helpers.py", "predict.py"]
    assert pid == pack_project(_project(tmp_path / "clean"))[1]


def test_ignore_files(tmp_path):
    root = _project(tmp_path / "p")
    files = {
        "weights/big.bin": "w",
        "weights/keep.txt": "k",
        "data/x.csv": "x",
        "a/b/notes.md": "n",
        "notes.md": "n",
        "out.log": "l",
        "sub/out.log": "l",
        "tmp1/t": "t",
    }
    _project(root, files)
    (root / ".dockerignore").write_text("# comment\n\n/weights\n!weights/keep.txt\n*.log\ntmp?\n")
    (root / ".cogignore").write_text("data/\n**/*.md\n")
    names = _names(pack_project(root)[0])
    assert "weights/big.bin" not in names and "weights/keep.txt" in names
    assert "data/x.csv" not in names and "data" not in names
    assert "notes.md" not in names and "a/b/notes.md" not in names
    assert "out.log" not in names
    assert "sub/out.log" in names  # `*` does not cross "/", as in Docker
    assert "tmp1/t" not in names
    assert {"cog.yaml", "predict.py", "lib/helpers.py", ".dockerignore", ".cogignore"} <= set(names)


def test_requires_cog_yaml(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    (root / "predict.py").write_text("")
    with pytest.raises(PackageInvalid):
        pack_project(root)
    _project(root)
    (root / ".cogignore").write_text("cog.yaml\n")
    with pytest.raises(PackageInvalid):
        pack_project(root)


def test_max_bytes(tmp_path):
    root = _project(tmp_path / "p")
    (root / "big.bin").write_bytes(os.urandom(10_000))
    with pytest.raises(PackageInvalid):
        pack_project(root, max_bytes=5_000)
    data, _ = pack_project(root, max_bytes=100_000)
    with pytest.raises(PackageInvalid):
        unpack_package(data, tmp_path / "out", max_bytes=5_000)


def test_links(tmp_path):
    root = _project(tmp_path / "p")
    (root / "alias.py").symlink_to("predict.py")
    data, pid = pack_project(root)
    out = unpack_package(data, tmp_path / "out")
    assert os.readlink(out / "alias.py") == "predict.py"
    assert package_digest(data) == pid
    (root / "escape").symlink_to("../../etc/passwd")
    with pytest.raises(PackageInvalid):
        pack_project(root)
    (root / "escape").unlink()
    (root / "abs").symlink_to("/etc/passwd")
    with pytest.raises(PackageInvalid):
        pack_project(root)


def test_unpack_round_trip(tmp_path):
    root = _project(tmp_path / "p")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    data, pid = pack_project(root)
    out = unpack_package(data, tmp_path / "out")
    assert (out / "cog.yaml").read_text() == "predict: predict.py:Predictor\n"
    assert (out / "lib" / "helpers.py").read_text() == "X = 1\n"
    assert os.access(out / "run.sh", os.X_OK)
    assert pack_project(out)[1] == pid


def _sym(name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _hard(name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info


def _dev(name):
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info


@pytest.mark.parametrize(
    "member",
    [
        (tarfile.TarInfo("/etc/evil"), b"x"),
        (tarfile.TarInfo("../evil"), b"x"),
        (tarfile.TarInfo("a/../../evil"), b"x"),
        (_sym("link", "/etc/passwd"), None),
        (_sym("a/link", "../../outside"), None),
        (_hard("hard", "/etc/passwd"), None),
        (_dev("null"), None),
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "abs-symlink", "rel-symlink-out", "hardlink", "device"],
)
def test_unsafe_archives_refused(tmp_path, member):
    data = _tar([member])
    with pytest.raises(PackageInvalid):
        unpack_package(data, tmp_path / "out")
    with pytest.raises(PackageInvalid):
        package_digest(data)
    assert not (tmp_path / "evil").exists()


def test_unpack_refuses_junk_and_missing_cog_yaml(tmp_path):
    with pytest.raises(PackageInvalid):
        unpack_package(b"not a tarball", tmp_path / "out")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("predict.py")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(PackageInvalid):
        unpack_package(buf.getvalue(), tmp_path / "out")


def test_read_member(tmp_path):
    data, _ = pack_project(_project(tmp_path / "p"))
    assert read_member(data, "cog.yaml") == b"predict: predict.py:Predictor\n"
    assert read_member(data, "lib/helpers.py") == b"X = 1\n"
    with pytest.raises(PackageInvalid):
        read_member(data, "missing.txt")
    with pytest.raises(PackageInvalid):
        read_member(data, "cog.yaml", max_bytes=3)
    with pytest.raises(PackageInvalid):
        read_member(b"junk", "cog.yaml")


def _bomb(tmp_path, unpacked: int) -> bytes:
    """cog.yaml and one file of `unpacked` zero bytes, gzipped (a few MB for gigabytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        cfg = b'predict: "predict.py:Predictor"\n'
        info = tarfile.TarInfo("cog.yaml")
        info.size = len(cfg)
        tar.addfile(info, io.BytesIO(cfg))
        info = tarfile.TarInfo("weights.bin")
        info.size = unpacked

        class Zeros(io.RawIOBase):
            def __init__(self):
                self.left = unpacked

            def readable(self):
                return True

            def readinto(self, b):
                n = min(len(b), self.left)
                b[:n] = bytes(n)
                self.left -= n
                return n

        tar.addfile(info, io.BufferedReader(Zeros(), 1 << 20))
    return buf.getvalue()


def test_a_decompression_bomb_is_refused_at_its_header_and_leaves_nothing(tmp_path):
    data = _bomb(tmp_path, 300 * 2**20)
    assert len(data) < 2 * 2**20  # 300 MiB of zeros in about one MiB
    limits = UnpackLimits()
    with pytest.raises(PackageInvalid, match="decompression bomb"):
        package_digest(data, limits=limits)
    dest = tmp_path / "out"
    with pytest.raises(PackageInvalid, match="decompression bomb"):
        unpack_package(data, dest, limits=limits)
    assert not any(dest.iterdir())


def test_unpack_limits_on_bytes_files_and_ratio():
    limits = UnpackLimits(max_bytes=1000, max_files=3, max_ratio=10, ratio_floor_bytes=100)
    limits.check(1000, 3, 100)  # at every limit: fine
    for unpacked, files, packed, reason in ((1001, 1, 10_000, "more than 1000 bytes"),
                                            (10, 4, 10, "more than 3 files"),
                                            (500, 1, 40, "inflates more than 10 times")):
        with pytest.raises(PackageInvalid, match=reason):
            limits.check(unpacked, files, packed)
    # real weights barely compress: a large archive of them passes the ratio
    UnpackLimits().check(3 * 2**30, 10, int(2.9 * 2**30))
    # a small project of text compresses well and passes: the ratio applies only past the floor
    UnpackLimits().check(2**20, 50, 2**14)
