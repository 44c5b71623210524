"""The default sandbox root filesystem: built offline with debootstrap, cached by recipe, imported into docker."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...assets import cache_dir

__all__ = ["ImageRecipe", "ImageBuildError", "default_recipe", "rootfs_path", "build_rootfs", "ensure_docker_image",
           "docker_image_tag", "SANDBOX_UID"]

SANDBOX_UID = 1000
"""The unprivileged uid (and gid) agent code runs as, in both docker and bwrap."""

_RECIPE_VERSION = 1


class ImageBuildError(RuntimeError):
    """The sandbox image could not be built (the message says which step failed and why)."""


def _apt_mirror() -> str:
    """The Debian mirror apt itself uses on this machine (so debootstrap goes the same way)."""
    env = os.environ.get("FORAGE_DEBIAN_MIRROR")
    if env:
        return env
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for m in re.finditer(r"(?m)^\s*URIs:\s*(\S+)", text):
            if m.group(1).rstrip("/").endswith("/debian"):
                return m.group(1)
        for m in re.finditer(r"(?m)^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", text):
            if m.group(1).rstrip("/").endswith("/debian"):
                return m.group(1)
    return "http://deb.debian.org/debian"


def _host_suite() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME=") and line.split("=", 1)[1].strip():
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "bookworm"


@dataclass(frozen=True)
class ImageRecipe:
    """What goes into the sandbox root: Debian suite, mirror, variant and extra packages."""

    suite: str = "bookworm"
    packages: tuple[str, ...] = ("python3", "python3-numpy", "python3-sympy")
    variant: str = "minbase"
    mirror: str = field(default="http://deb.debian.org/debian", compare=False)

    def key(self) -> str:
        """A short content hash of the recipe (the mirror is not part of it: same packages, same tree)."""
        d = asdict(self)
        d.pop("mirror")
        d["version"] = _RECIPE_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def default_recipe() -> ImageRecipe:
    """The default recipe: the host's Debian suite and apt mirror, python3 + numpy + sympy."""
    return ImageRecipe(suite=_host_suite(), mirror=_apt_mirror())


def rootfs_path(recipe: ImageRecipe | None = None) -> Path:
    """Where the (built or future) root filesystem of ``recipe`` lives under the cache."""
    recipe = recipe or default_recipe()
    return cache_dir("sandbox") / f"rootfs-{recipe.key()}"


def docker_image_tag(recipe: ImageRecipe | None = None) -> str:
    """The docker tag of ``recipe``'s image, e.g. ``forage-sandbox:3f2a9c0b1d4e``."""
    return f"forage-sandbox:{(recipe or default_recipe()).key()}"


def _finish_rootfs(root: Path, recipe: ImageRecipe) -> None:
    """Add the unprivileged user, the work dir and drop caches that only make the tree bigger."""
    with open(root / "etc/passwd", "a") as f:
        f.write(f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:forage sandbox:/work:/usr/sbin/nologin\n")
    with open(root / "etc/group", "a") as f:
        f.write(f"sandbox:x:{SANDBOX_UID}:\n")
    for d in ("work", "opt/forage"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"):
        p = root / junk
        if p.is_dir():
            for child in p.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                elif child.name != "lock":
                    child.unlink(missing_ok=True)
    # Compile the standard library and packages once, so a read-only root imports fast.
    subprocess.run(["chroot", str(root), "python3", "-m", "compileall", "-q", "-j", "0", "/usr/lib/python3"],
                   check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (root / ".forage-recipe.json").write_text(json.dumps({**asdict(recipe), "key": recipe.key()}, indent=1))


def _run_with_progress(cmd: list[str]) -> tuple[int, list[str]]:
    """Run ``cmd`` showing its latest output line on a progress bar; return (exit code, last lines)."""
    from collections import deque

    from tqdm import tqdm

    tail: deque[str] = deque(maxlen=15)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    assert proc.stdout is not None
    with tqdm(desc="debootstrap", unit=" steps", leave=False) as bar:
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            bar.set_postfix_str(line[:70], refresh=False)
            bar.update(1)
    return proc.wait(), list(tail)


def build_rootfs(recipe: ImageRecipe | None = None, *, force: bool = False, log=print) -> Path:
    """Build (once) the debootstrap root of ``recipe`` under the cache; return its path.

    Needs root and ``debootstrap``. The tree is built beside the final path and renamed into
    place, so an interrupted build never leaves a half tree that looks finished.
    """
    recipe = recipe or default_recipe()
    final = rootfs_path(recipe)
    if (final / ".forage-recipe.json").exists() and not force:
        return final
    if os.geteuid() != 0:
        raise ImageBuildError("building the sandbox root needs root (debootstrap and chroot)")
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed: apt-get install debootstrap")
    tmp = Path(tempfile.mkdtemp(prefix=f"rootfs-{recipe.key()}.", dir=final.parent))
    started = time.monotonic()
    log(f"debootstrap {recipe.suite} ({recipe.variant}, +{','.join(recipe.packages)}) from {recipe.mirror} ...")
    cmd = ["debootstrap", f"--variant={recipe.variant}", f"--include={','.join(recipe.packages)}", recipe.suite, str(tmp),
           recipe.mirror]
    returncode, tail = _run_with_progress(cmd)
    if returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ImageBuildError(f"debootstrap failed (exit {returncode}):\n" + "\n".join(tail))
    _finish_rootfs(tmp, recipe)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    final.chmod(0o755)
    log(f"sandbox root ready in {time.monotonic() - started:.0f} s: {final}")
    return final


def ensure_docker_image(recipe: ImageRecipe | None = None, client=None, *, host: str | None = None, log=print) -> str:
    """Make sure the docker image of ``recipe`` exists (``docker import`` of the built root); return its tag.

    ``host``: the daemon's ``DOCKER_HOST``-style URL (default: ``DOCKER_HOST`` / the local socket).
    """
    recipe = recipe or default_recipe()
    tag = docker_image_tag(recipe)
    if client is None:
        import docker

        client = docker.from_env() if host is None else docker.DockerClient(base_url=host)
    try:
        client.images.get(tag)
        return tag
    except Exception:
        pass
    root = build_rootfs(recipe, log=log)
    started = time.monotonic()
    log(f"docker import {root} as {tag} ...")
    tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
    imp = subprocess.run(["docker", *(["-H", host] if host else []), "import",
                          "-c", f"USER {SANDBOX_UID}:{SANDBOX_UID}", "-c", "WORKDIR /work",
                          "-c", "ENV LANG=C.UTF-8", "-", tag], stdin=tar.stdout, capture_output=True, text=True)
    tar.stdout.close()
    tar.wait()
    if imp.returncode != 0 or tar.returncode != 0:
        raise ImageBuildError(f"docker import failed: {imp.stderr.strip()[-2000:]}")
    log(f"imported {tag} in {time.monotonic() - started:.1f} s")
    return tag
