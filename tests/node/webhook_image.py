"""The lifecycle-webhook image, for the chart to run on the node — assembled without Docker.

There is no Docker engine here, so the Dockerfile cannot be built; this makes the image the
Dockerfile describes from what this machine already has, with the same layout and contract:

- /opt/venv: a virtual environment holding exactly the runtime distributions that
  requirements.lock names (copied from the test venv, which `make venv` installs from the lock
  with hashes) and the project's own `webhook` package; `/opt/venv/bin/lifecycle-webhook` is
  the entry point and on PATH.
- /usr/local: the Python that runs the tests (interpreter, libpython, the standard library
  without its tests, IDLE, Tk and build files).
- the shared libraries all of those load (found with ldd), uid 65532 in /etc/passwd, nothing
  writable: the chart mounts an emptyDir at /tmp and runs it read-only as 65532.

Cached beside the other node images, keyed by the content of everything that goes in.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from ..tools import REPO
from .images import cache_root, write_archive

WEBHOOK_IMAGE = "localhost/lifecycle-webhook:node-test"
LOCK = REPO / "requirements.lock"
FORMAT_VERSION = "1"
STDLIB_LEFT_OUT = frozenset(
    {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages"}
)
PYTHON_TAG = f"python{sys.version_info.major}.{sys.version_info.minor}"
SITE_PACKAGES = f"opt/venv/lib/{PYTHON_TAG}/site-packages"

Files = dict[str, tuple[bytes | Path, int]]


def locked_distributions() -> list[str]:
    names = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", LOCK.read_text(), re.MULTILINE)
    if not names:
        raise RuntimeError(f"{LOCK} names no distribution")
    return names


def _distribution_files(name: str) -> Iterator[tuple[str, Path]]:
    distribution = importlib.metadata.distribution(name)
    for entry in distribution.files or []:
        path = Path(str(distribution.locate_file(entry))).resolve()
        relative = str(entry)
        if relative.startswith("..") or not path.is_file():
            continue  # console scripts live outside site-packages
        yield f"{SITE_PACKAGES}/{relative}", path


def _stdlib_files() -> Iterator[tuple[str, Path]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*")):
        relative = path.relative_to(stdlib)
        top = relative.parts[0]
        if top in STDLIB_LEFT_OUT or top.startswith("config-") or not path.is_file():
            continue
        if "__pycache__" in relative.parts and not path.name.endswith(
            f".cpython-{sys.version_info.major}{sys.version_info.minor}.pyc"
        ):
            continue  # keep the plain .pyc; drop the -O variants
        yield f"usr/local/lib/{PYTHON_TAG}/{relative}", path


def _shared_libraries(objects: list[Path]) -> dict[str, Path]:
    """Every library the ELF files in `objects` load, by the path the loader will look in."""
    found: dict[str, Path] = {}
    for chunk in range(0, len(objects), 200):
        result = subprocess.run(
            ["ldd", *map(str, objects[chunk : chunk + 200])],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        for line in result.stdout.splitlines():
            match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if match:
                path = Path(match.group(1))
                found[str(path).lstrip("/")] = path.resolve()
    return found


def build_webhook_image() -> Path:
    """The docker-archive of the image (built, or reused from the cache)."""
    libdir = Path(sysconfig.get_config_var("LIBDIR"))
    libpython = libdir / str(sysconfig.get_config_var("INSTSONAME"))
    interpreter = Path(sys.executable).resolve()
    files: Files = {}
    for name in locked_distributions():
        for target, source in _distribution_files(name):
            files[target] = (source, 0o644)
    for source in sorted((REPO / "webhook").rglob("*")):
        if source.is_file() and "__pycache__" not in source.parts:
            files[f"{SITE_PACKAGES}/{source.relative_to(REPO)}"] = (source, 0o644)
    for target, source in _stdlib_files():
        files[target] = (source, 0o644)
    files[f"usr/local/bin/{PYTHON_TAG}"] = (interpreter, 0o755)
    files[f"usr/local/lib/{libpython.name}"] = (libpython.resolve(), 0o755)
    elves = [interpreter, libpython] + [
        source for source, _ in files.values() if isinstance(source, Path) and ".so" in source.name
    ]
    for target, source in _shared_libraries(elves).items():
        if not target.startswith(("usr/local", "opt/venv", str(libdir).lstrip("/"))):
            files.setdefault(target, (source, 0o755))
    files["opt/venv/pyvenv.cfg"] = (
        f"home = /usr/local/bin\ninclude-system-site-packages = false\nversion = "
        f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}\n".encode(),
        0o644,
    )
    files["opt/venv/bin/lifecycle-webhook"] = (
        b"#!/opt/venv/bin/python\nimport sys\nfrom webhook.cli import main\nsys.exit(main())\n",
        0o755,
    )
    files["etc/passwd"] = (
        b"root:x:0:0:root:/root:/usr/sbin/nologin\n"
        b"nonroot:x:65532:65532::/nonexistent:/usr/sbin/nologin\n",
        0o644,
    )
    files["etc/group"] = (b"root:x:0:\nnonroot:x:65532:\n", 0o644)
    symlinks = {
        "opt/venv/bin/python": f"/usr/local/bin/{PYTHON_TAG}",
        "opt/venv/bin/python3": "python",
        "usr/local/bin/python3": PYTHON_TAG,
    }
    directories = ["tmp"]

    digest = hashlib.sha256(FORMAT_VERSION.encode())
    for target in sorted(files):
        content, mode = files[target]
        digest.update(f"{target}\0{mode}\0".encode())
        digest.update(content.read_bytes() if isinstance(content, Path) else content)
    directory = cache_root() / f"webhook-image-{digest.hexdigest()[:16]}"
    archive = directory / "lifecycle-webhook.tar"
    if archive.is_file():
        return archive
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_archive(
        staging / archive.name,
        WEBHOOK_IMAGE,
        files,
        symlinks,
        ["lifecycle-webhook"],
        env=[
            "PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin",
            "LD_LIBRARY_PATH=/usr/local/lib",
            "PYTHONDONTWRITEBYTECODE=1",
            "PYTHONUNBUFFERED=1",
            "TMPDIR=/tmp",
            "HOME=/tmp",
        ],
        user="65532:65532",
        directories=directories,
        command=["serve"],
    )
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    return archive


if __name__ == "__main__":
    print(build_webhook_image())
