"""Read single files from released wheels (and source distributions) without installing or importing them.

A wheel is a zip archive. This module opens one either from the local cache (`.cache/wheels/`)
or, when it is not there, directly on the package index with HTTP range requests, so that only
the zip directory and the members asked for travel (a 240 MB wheel costs a few hundred KB).
The download address comes from pip itself (`pip install --dry-run --report`), which resolves
the wheel without installing it; no address is written into the repository.

A package released on the index only as a source distribution (`Sdist`) is a gzipped tar, which
has no directory to seek to: it is fetched whole with `pip download --no-deps --no-binary PKG`
(nothing is built or installed) into the same cache, and read with `tarfile`.

Used by `scripts/upstream_evidence.py`; nothing here imports an upstream package.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "wheels"
BLOCK = 1 << 20  # bytes fetched per range request


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over HTTP range requests, with a block cache."""

    def __init__(self, url: str):
        super().__init__()
        self.url = url
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - pip's own URL
            self.size = int(response.headers["Content-Length"])
        self.pos = 0
        self.blocks: dict[int, bytes] = {}
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def _block(self, index: int) -> bytes:
        if index not in self.blocks:
            start = index * BLOCK
            end = min(self.size, start + BLOCK) - 1
            request = urllib.request.Request(self.url, headers={"Range": f"bytes={start}-{end}"})
            with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
                self.blocks[index] = response.read()
            self.requests += 1
        return self.blocks[index]

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.pos)
        if n <= 0:
            return 0
        out = bytearray()
        while len(out) < n:
            index, offset = divmod(self.pos + len(out), BLOCK)
            out += self._block(index)[offset:offset + n - len(out)]
        buffer[:n] = out
        self.pos += n
        return n


def resolve(package: str, version: str) -> dict:
    """pip's view of the wheel it would install: {'name', 'url', 'sha256'}; nothing is installed."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--no-deps",
               "--ignore-installed", "--only-binary=:all:", "--report", str(report),
               f"{package}=={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not report.exists():
            raise RuntimeError(f"pip could not resolve a wheel of {package}=={version}: "
                               f"{done.stderr.strip().splitlines()[-1:]}")
        info = json.loads(report.read_text())["install"][0]["download_info"]
    url = info["url"]
    return {"name": url.rsplit("/", 1)[-1], "url": url,
            "sha256": info.get("archive_info", {}).get("hashes", {}).get("sha256")}


def _local(package: str, version: str) -> Path | None:
    stem = package.replace("-", "_")
    for folder in (CACHE, ROOT / ".cache" / f"{package}-{version}"):
        hits = sorted(folder.glob(f"{stem}-{version}-*.whl")) if folder.exists() else []
        if hits:
            return hits[0]
    return None


class Wheel:
    """One released wheel, opened locally if cached, else over range requests."""

    def __init__(self, package: str, version: str, offline: bool = False):
        self.package, self.version = package, version
        local = _local(package, version)
        if local is not None:
            self.name = local.name
            self.sha256 = hashlib.sha256(local.read_bytes()).hexdigest()
            self.zip = zipfile.ZipFile(local)
            self.source = "cache"
        elif offline:
            raise FileNotFoundError(f"{package} {version} is not in {CACHE} and offline mode is on")
        else:
            info = resolve(package, version)
            self.name, self.sha256 = info["name"], info["sha256"]
            self.raw = RangeFile(info["url"])
            self.zip = zipfile.ZipFile(io.BufferedReader(self.raw, buffer_size=BLOCK))
            self.source = "index"

    def read(self, path: str) -> bytes:
        return self.zip.read(path)

    def text(self, path: str) -> str:
        return self.read(path).decode("utf-8")


class Sdist:
    """One released source distribution, read from the cache or downloaded whole by pip.

    Paths are given inside the archive's top folder (`PKG-VERSION/`), as in the source tree.
    """

    def __init__(self, package: str, version: str, offline: bool = False):
        self.package, self.version = package, version
        stem = package.replace("-", "_")
        hits = sorted(CACHE.glob(f"{stem}-{version}.tar.gz")) if CACHE.exists() else []
        if not hits:
            if offline:
                raise FileNotFoundError(f"{package} {version} (sdist) is not in {CACHE} and offline mode is on")
            CACHE.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", package,
                   "-d", str(CACHE), f"{package}=={version}"]
            subprocess.run(cmd, capture_output=True, text=True)  # pip may fail on metadata after saving
            hits = sorted(CACHE.glob(f"{stem}-{version}.tar.gz"))
            if not hits:
                raise RuntimeError(f"pip could not download the sdist of {package}=={version}")
            self.source = "index"
        else:
            self.source = "cache"
        self.path = hits[0]
        self.name = self.path.name
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()
        self.tar = tarfile.open(self.path, "r:gz")
        self.top = f"{stem}-{version}"

    def read(self, path: str) -> bytes:
        member = self.tar.extractfile(f"{self.top}/{path}")
        if member is None:
            raise KeyError(path)
        return member.read()

    def text(self, path: str) -> str:
        return self.read(path).decode("utf-8")


if __name__ == "__main__":  # tiny manual check: python scripts/upstream_wheels.py vllm 0.34.0 PATH
    w = Wheel(sys.argv[1], sys.argv[2])
    print(w.name, w.sha256, w.source, len(w.read(sys.argv[3])))
