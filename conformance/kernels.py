"""The kernels of the matrix: the running one, Debian's, and images a user built.

Debian's kernels come from its package registry through tools/debian.py
(a private apt configuration under <repo>/.cache/debian; the machine's
own apt sources are never touched).  A major line such as "6.12" means the
newest generic amd64 image of that line in any suite; the -cloud- flavour
is never chosen, as it lacks the 9p file system the guest's root is
shared with.

The packages come in two layouts.  Up to 6.18 one linux-image-<abi>-amd64
holds the image (/boot/vmlinuz-<release>) and every module.  From 6.19
linux-image-<abi>-amd64 is an empty metapackage: the image sits in
linux-binary-<abi>-amd64 (/usr/lib/modules/<release>/vmlinuz), the modules
in linux-modules-<abi>-amd64 and modules.order, modules.builtin and the
config in linux-base-<abi>-amd64.  Either way the parts are linked into
one tree under <repo>/.cache/kernels/, with the module index that
virtme-ng's initramfs and the guest's modprobe read (depmod), so that
virtme-ng finds the modules next to the image.  Compressed modules
(.ko.xz, from 6.12) stay compressed: depmod indexes them and the
initramfs's busybox insmod reads them.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spec.model import Version
from tools import debian

ROOT = Path(__file__).resolve().parents[1]
PREPARED = ROOT / ".cache" / "kernels"
ARCH = "amd64"

# linux-image-<abi>-amd64 of the generic flavour: 6.1.0-50, 6.12.117+deb13, 7.3.
# A flavour (-cloud, -rt) or -unsigned/-dbg after the abi does not match.
GENERIC_IMAGE = re.compile(rf"^linux-image-(?P<abi>\d+\.\d+[^-]*(?:-\d+)?)-{ARCH}$")
LINE = re.compile(r"^\d+\.\d+$")
# The packages of the split layout, beside the metapackage linux-image-<abi>-amd64.
SPLIT_PARTS = ("linux-binary", "linux-modules", "linux-base")


class KernelError(Exception):
    """A kernel could not be had or prepared; the message says which and why."""


@dataclass(frozen=True)
class Kernel:
    label: str                  # the matrix column: "host", "6.12", a release
    source: str                 # where it came from, for people
    release: str                # uname -r
    image: Path | None = None   # what to boot; None for the running kernel or one that could not be had
    fetch: float = 0.0          # seconds spent downloading and unpacking
    prepare: float = 0.0        # seconds spent linking the parts and indexing modules
    host: bool = False          # the running kernel, checked without a VM

    @property
    def version(self) -> Version:
        return Version.parse(self.release)

    @property
    def is_host(self) -> bool:
        return self.host


# --- choosing packages (no network) ---------------------------------------------------

def parse_lines(text: str) -> list[str] | None:
    """"6.1,6.12" -> ["6.1", "6.12"]; "all" -> None (every line the registry has)."""
    if text.strip() == "all":
        return None
    lines = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in lines if not LINE.match(t)]
    if bad or not lines:
        raise KernelError(f"--debian takes major lines such as 6.1,6.12 or 'all', not {text!r}")
    return list(dict.fromkeys(lines))


def upstream(version: str) -> str:
    """The upstream part of a Debian version: 1:6.12.117-1 -> 6.12.117."""
    return version.split(":", 1)[-1].rsplit("-", 1)[0]


def line_of(version: str) -> str:
    return str(Version.parse(upstream(version).split("~", 1)[0].split("+", 1)[0]))


def generic_abi(name: str) -> str | None:
    """The abi of a generic-flavour image package, None for anything else."""
    m = GENERIC_IMAGE.match(name)
    return m.group("abi") if m else None


def major_lines(packages: Iterable[debian.Package]) -> list[str]:
    """Every major line with a generic image among `packages`, oldest first."""
    lines = {line_of(p.version) for p in packages if generic_abi(p.name)}
    return sorted(lines, key=Version.parse)


def split_parts(image: debian.Package) -> list[str]:
    """The packages holding the kernel when `image` is the split layout's metapackage."""
    abi = generic_abi(image.name)
    if abi is None:
        raise KernelError(f"{image.name} is not a generic {ARCH} kernel image")
    return [f"{part}-{abi}-{ARCH}" for part in SPLIT_PARTS]


def find_image(tree: Path) -> tuple[Path, str] | None:
    """The kernel image in an unpacked tree and its release, from the layout:
    boot/vmlinuz-<release> or [usr/]lib/modules/<release>/vmlinuz."""
    for path in sorted(tree.glob("boot/vmlinuz-*")):
        return path, path.name.removeprefix("vmlinuz-")
    for pattern in ("usr/lib/modules/*/vmlinuz", "lib/modules/*/vmlinuz"):
        for path in sorted(tree.glob(pattern)):
            return path, path.parent.name
    return None


def module_base(tree: Path, release: str) -> Path | None:
    """The directory depmod -b takes: the one whose lib/modules/<release> holds the modules."""
    for base in (tree / "usr", tree):
        if (base / "lib" / "modules" / release / "kernel").is_dir():
            return base
    return None


# --- getting and preparing them ----------------------------------------------------

def registry_images(cache: Path = debian.DEFAULT_CACHE) -> list[debian.Package]:
    """Every linux-image-*-amd64 in the suites tools/debian.py knows."""
    out: list[debian.Package] = []
    reached = False
    for suite in debian.SUITES:
        apt = debian.Apt(cache, suite)
        try:
            apt.update()
        except debian.FetchError:
            continue
        reached = True
        out += apt.candidates(f"linux-image-*-{ARCH}")
    if not reached:
        raise KernelError("cannot reach Debian's package registry")
    return out


def choose(images: Iterable[debian.Package], line: str) -> debian.Package:
    """The newest generic image of a major line, whichever suite holds it
    (bookworm-security carries newer 6.1 builds than bookworm)."""
    matching = [p for p in images if generic_abi(p.name) and line_of(p.version) == line]
    if not matching:
        lines = ", ".join(major_lines(images)) or "none"
        raise KernelError(f"Debian has no generic {ARCH} kernel {line} (lines: {lines})")
    return max(matching, key=functools.cmp_to_key(debian.compare))


def debian_kernel(image: debian.Package, cache: Path = debian.DEFAULT_CACHE, prepared: Path = PREPARED,
                  progress: Callable[[str], None] = lambda _: None) -> Kernel:
    """Download, unpack and prepare the kernel of a generic image package."""
    line = line_of(image.version)
    target = prepared / image.stem
    start = time.monotonic()
    progress(f"{line}: {image}")
    try:
        trees = [debian.extract(image, cache)]
        if find_image(trees[0]) is None:  # the split layout's metapackage
            # All parts resolved before any is downloaded: the registry keeps
            # the image of superseded builds longer than their modules.
            parts = [debian.resolve(name, image.version, cache, suite=image.suite) for name in split_parts(image)]
            for part in parts:
                progress(f"{line}: {part}")
                trees.append(debian.extract(part, cache))
    except debian.FetchError as exc:
        raise KernelError(f"Debian {line}: {exc}") from None
    fetched = time.monotonic()
    if not target.is_dir():
        progress(f"{line}: linking the parts and indexing the modules")
        assemble(trees, target)
    found = find_image(target)
    assert found is not None
    path, release = found
    return Kernel(line, f"Debian {image}", release, path, round(fetched - start, 1),
                  round(time.monotonic() - fetched, 1))


def assemble(trees: Sequence[Path], target: Path) -> None:
    """Hard-link the unpacked packages into one tree at `target` and index its
    modules; all or nothing, so a half-prepared tree is never booted."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for tree in trees:
            shutil.copytree(tree, tmp, copy_function=os.link, dirs_exist_ok=True, symlinks=True)
        found = find_image(tmp)
        if found is None:
            raise KernelError(f"no kernel image in {', '.join(t.name for t in trees)}")
        _, release = found
        base = module_base(tmp, release)
        if base is None:
            raise KernelError(f"no modules for {release} in {', '.join(t.name for t in trees)}")
        depmod(base, release)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def depmod(base: Path, release: str) -> None:
    exe = shutil.which("depmod", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if exe is None:
        raise KernelError("depmod is missing (Debian package kmod)")
    proc = subprocess.run([exe, "-a", "-b", str(base), release], capture_output=True, text=True)
    if proc.returncode != 0 or not (base / "lib" / "modules" / release / "modules.dep").exists():
        raise KernelError(f"depmod for {release} failed: {proc.stderr.strip()[:200]}")


def host_kernel() -> Kernel:
    return Kernel("host", "the running kernel", os.uname().release, host=True)


def image_release(path: Path) -> str:
    """The release a bzImage reports: the x86 boot protocol's kernel_version
    string (the header's offset at 0x20e, from 0x200)."""
    try:
        with open(path, "rb") as f:
            head = f.read(0x8000)
    except OSError as exc:
        raise KernelError(f"{path}: {exc.strerror}") from None
    if head[0x202:0x206] != b"HdrS":
        raise KernelError(f"{path}: not an x86 bzImage (no boot protocol header)")
    offset = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    text = head[offset:offset + 256].split(b"\0", 1)[0].decode(errors="replace")
    if not text.strip():
        raise KernelError(f"{path}: the image names no release")
    return text.split()[0]


def user_kernel(path: Path) -> Kernel:
    """An image a user built.  Its modules are found where virtme-ng looks:
    lib/modules/<release> above the image (an installed tree); without them
    the kernel needs 9p and virtio built in."""
    path = path.resolve()
    if not path.is_file():
        raise KernelError(f"{path}: no such kernel image")
    release = image_release(path)
    return Kernel(release, f"file {path}", release, path)
