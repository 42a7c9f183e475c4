"""Debian packages from Debian's registry, for headers and kernels of other
versions than the machine's own.

apt is the ordinary client of that registry (it checks the archive's
signatures and every package's hash), but the machine's apt sources list one
release only, and a tool must not edit them.  So apt runs here with a
private configuration: a sources list per suite, its own package lists and
archive directory, all under a cache directory; the system's sources, lists
and caches are neither read for packages nor written.  A package is
downloaded once and extracted (dpkg-deb -x) next to it; later runs find it
there without the network while the lists are fresh.

`fetch("linux-libc-dev", "6.12", cache)` returns the extracted tree; a name
may be a shell pattern (`linux-image-6.12*-amd64`) and the version a
prefix, or None with a suite for that suite's newest.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import functools
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / ".cache" / "debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
ARCHIVE = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
LISTS_MAX_AGE = 24 * 3600  # seconds before a suite's package lists are fetched again
TIMEOUT = 900  # seconds for one apt-get run


@dataclass(frozen=True)
class Suite:
    name: str
    uri: str


# In the order a version is looked for: the releases first, then the
# backports, security updates and the development suites.
SUITES: tuple[Suite, ...] = (
    Suite("bookworm", ARCHIVE),
    Suite("trixie", ARCHIVE),
    Suite("trixie-backports", ARCHIVE),
    Suite("sid", ARCHIVE),
    Suite("bookworm-security", SECURITY),
    Suite("trixie-security", SECURITY),
    Suite("bookworm-backports", ARCHIVE),
    Suite("experimental", ARCHIVE),
)


# How apt says the network, not the suite, is the problem.
_OFFLINE = ("Could not connect", "Could not resolve", "Temporary failure resolving", "timed out",
            "Unable to connect", "Network is unreachable", "No route to host")


class FetchError(Exception):
    """The registry could not be reached, or holds no such package."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str
    suite: str
    filename: str  # the path in the archive's pool

    @property
    def stem(self) -> str:
        """The name of the .deb and of the extracted tree, as apt names files."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}"

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.suite})"


def suite_named(name: str) -> Suite | None:
    for s in SUITES:
        if s.name == name:
            return s
    return None


def fetch(package: str, version: str | None, cache_dir: Path = DEFAULT_CACHE,
          suite: str | None = None) -> Path:
    """The extracted tree of the newest package matching `package` (a name or
    a shell pattern) whose version starts with `version`."""
    with _locked(cache_dir):
        return _extract(_resolve(package, version, cache_dir, suite), cache_dir)


def resolve(package: str, version: str | None, cache_dir: Path = DEFAULT_CACHE,
            suite: str | None = None) -> Package:
    """The package `fetch` would extract, without downloading it."""
    with _locked(cache_dir):
        return _resolve(package, version, cache_dir, suite)


def extract(pkg: Package, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Download (once) and extract (once) a resolved package."""
    with _locked(cache_dir):
        return _extract(pkg, cache_dir)


def version_matches(version: str, prefix: str | None) -> bool:
    """"6.12" matches 6.12.117-1 and 6.12-1~bpo, not 6.120.1."""
    if prefix is None:
        return True
    upstream = version.split(":", 1)[-1]
    return upstream == prefix or (upstream.startswith(prefix) and upstream[len(prefix)] in ".-+~")


# --- the work, under the cache's lock ------------------------------------------

def _resolve(package: str, version: str | None, cache_dir: Path, suite: str | None) -> Package:
    if suite is not None:
        chosen = suite_named(suite)
        if chosen is None:
            raise FetchError(f"unknown suite {suite!r}; known: {', '.join(s.name for s in SUITES)}")
        suites: Sequence[Suite] = (chosen,)
    else:
        suites = SUITES
    seen: dict[str, list[str]] = {}
    unreachable: list[str] = []
    for s in suites:
        apt = Apt(cache_dir, s)
        try:
            apt.update()
        except FetchError as exc:
            if any(sign in str(exc) for sign in _OFFLINE):
                # The registry is not there: every other suite would wait as long.
                raise FetchError(f"cannot reach Debian's registry: {exc}") from None
            unreachable.append(f"{s.name}: {exc}")
            continue
        candidates = apt.candidates(package)
        if candidates:
            seen[s.name] = [p.version for p in candidates]
        matching = [p for p in candidates if version_matches(p.version, version)]
        if matching:
            return max(matching, key=functools.cmp_to_key(compare))
    wanted = f"{package} {version}" if version else package
    if unreachable and not seen:
        raise FetchError(f"cannot reach Debian's registry for {wanted}: {unreachable[0]}")
    where = ", ".join(s.name for s in suites)
    found = "; ".join(f"{name} {', '.join(versions)}" for name, versions in seen.items())
    raise FetchError(f"no {wanted} in {where}" + (f" (found: {found})" if found else ""))


def _extract(pkg: Package, cache_dir: Path) -> Path:
    tree = cache_dir / pkg.stem
    if tree.is_dir():
        return tree
    deb = Apt(cache_dir, suite_named(pkg.suite) or Suite(pkg.suite, ARCHIVE)).download(pkg)
    tmp = Path(tempfile.mkdtemp(prefix=f".{pkg.stem}.", dir=cache_dir))
    try:
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], f"extracting {deb.name}")
        tmp.rename(tree)  # all or nothing: a half-extracted tree is never seen
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tree


class Apt:
    """apt-get and apt-cache on one suite, with the private configuration."""

    def __init__(self, cache_dir: Path, suite: Suite) -> None:
        self.suite = suite
        self.dir = cache_dir / "apt" / suite.name
        self.lists = self.dir / "lists"
        self.archives = cache_dir / "archives"
        self.stamp = self.dir / "updated"

    def options(self) -> list[str]:
        arch = _native_arch()
        settings = {
            "Dir::Etc::sourcelist": self.dir / "sources.list",
            "Dir::Etc::sourceparts": "-",
            "Dir::State::Lists": self.lists,
            "Dir::Cache": self.dir / "cache",
            "Dir::Cache::Archives": self.archives,
            "Dir::Cache::pkgcache": self.dir / "cache" / "pkgcache.bin",
            "Dir::Cache::srcpkgcache": "",
            "Dir::State::status": self.dir / "status",  # empty: what the machine has installed is no candidate
            "APT::Architecture": arch,
            "APT::Architectures": arch,
            "APT::Sandbox::User": "root" if os.geteuid() == 0 else "",
            "Acquire::Languages": "none",
            "Acquire::http::Timeout": "30",
            "Acquire::Retries": "1",
        }
        out = []
        for key, value in settings.items():
            if value != "" or key == "Dir::Cache::srcpkgcache":
                out += ["-o", f"{key}={value}"]
        return out

    def update(self) -> None:
        """Fetch the suite's package lists unless they are fresh; stale lists
        do when the registry cannot be reached."""
        have = self.stamp.exists()
        if have and time.time() - self.stamp.stat().st_mtime < LISTS_MAX_AGE:
            return
        for d in (self.lists / "partial", self.dir / "cache", self.archives / "partial"):
            d.mkdir(parents=True, exist_ok=True)
        (self.dir / "status").touch()
        (self.dir / "sources.list").write_text(
            f"deb [arch={_native_arch()} signed-by={KEYRING}] {self.suite.uri} {self.suite.name} main\n")
        try:
            _run(["apt-get", *self.options(), "-q", "--error-on=any", "update"],
                 f"apt-get update of {self.suite.name}")
        except FetchError:
            if not have:
                raise
            log.warning("using the package lists of %s from %s: the registry cannot be reached",
                        self.suite.name, time.ctime(self.stamp.stat().st_mtime))
            return
        self.stamp.touch()

    def candidates(self, package: str) -> list[Package]:
        if any(c in package for c in "*?["):
            prefix = package.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
            names = fnmatch.filter(self._cache("pkgnames", prefix).split(), package)
        else:
            names = [package]
        if not names:
            return []
        try:
            text = self._cache("show", *names)
        except FetchError:
            return []  # apt-cache show fails when no name is known in this suite
        out = []
        for para in text.split("\n\n"):
            fields = _fields(para)
            if "Package" in fields and "Version" in fields:
                out.append(Package(fields["Package"], fields["Version"], fields.get("Architecture", "all"),
                                   self.suite.name, fields.get("Filename", "")))
        return out

    def download(self, pkg: Package) -> Path:
        deb = self.archives / f"{pkg.stem}.deb"
        if deb.exists():
            return deb
        (self.archives / "partial").mkdir(parents=True, exist_ok=True)
        self.update()
        _run(["apt-get", *self.options(), "-q", "download", f"{pkg.name}={pkg.version}"],
             f"downloading {pkg}", cwd=self.archives)
        if not deb.exists():
            raise FetchError(f"apt-get download of {pkg} wrote no {deb.name}")
        return deb

    def _cache(self, *args: str) -> str:
        return _run(["apt-cache", *self.options(), *args], f"apt-cache {args[0]} in {self.suite.name}")


def _fields(paragraph: str) -> dict[str, str]:
    out = {}
    for line in paragraph.splitlines():
        if line and not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=TIMEOUT,
                              env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired:
        raise FetchError(f"{what}: no answer within {TIMEOUT} s") from None
    except OSError as exc:
        raise FetchError(f"{what}: {cmd[0]}: {exc.strerror}") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("E:", "W:", "dpkg-deb"))]
        raise FetchError(f"{what} failed: {(lines or proc.stderr.splitlines() or ['?'])[0]}")
    return proc.stdout


def compare(a: Package, b: Package) -> int:
    """By version; of equal versions the shorter name wins (linux-image-X-amd64
    over linux-image-X-rt-amd64), so the choice does not depend on list order."""
    if a.version != b.version:
        lower = subprocess.run(["dpkg", "--compare-versions", a.version, "lt", b.version]).returncode == 0
        return -1 if lower else 1
    ka, kb = (len(a.name), a.name), (len(b.name), b.name)
    return (ka < kb) - (ka > kb)


@functools.cache
def _native_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


@contextlib.contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    """One apt at a time per cache: a test and a matrix run may share it."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
