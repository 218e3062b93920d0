"""The node's container images, made from local files: no registry is reachable here.

- `localhost/pause:local`, the pod sandbox: `pause.c` built with `gcc -static` (the same binary
  is the PID 1 of the node's namespaces).
- `localhost/lw-app:1`, the test apps: Debian's static busybox (sh, httpd, sleep, …) and a page.

Each is a docker-archive tarball (one layer, a config, a manifest) that `ctr images import`
accepts. They are cached beside the Go-built tools, keyed by what goes into them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAUSE_SOURCE = HERE / "pause.c"
BUSYBOX = Path("/bin/busybox")
PAUSE_IMAGE = "localhost/pause:local"
APP_IMAGE = "localhost/lw-app:1"
FORMAT_VERSION = "1"
"""Bump when the way images are assembled changes, so cached ones are rebuilt."""
INDEX_HTML = b"lifecycle-webhook node test app\n"


@dataclass(frozen=True)
class Images:
    pause_binary: Path
    archives: tuple[Path, ...]


def cache_root() -> Path:
    configured = os.environ.get("LIFECYCLE_WEBHOOK_TOOLS")
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "lifecycle-webhook" / "tools"


def build_images() -> Images:
    """Builds (or reuses) the pause binary and both image archives."""
    digest = hashlib.sha256(FORMAT_VERSION.encode())
    digest.update(PAUSE_SOURCE.read_bytes())
    digest.update(BUSYBOX.read_bytes())
    directory = cache_root() / f"node-images-{digest.hexdigest()[:16]}"
    pause = directory / "pause"
    archives = (directory / "pause.tar", directory / "app.tar")
    if pause.is_file() and all(path.is_file() for path in archives):
        return Images(pause, archives)
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(staging / "pause"), str(PAUSE_SOURCE)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pause_binary = (staging / "pause").read_bytes()
    write_archive(
        staging / "pause.tar", PAUSE_IMAGE, {"pause": (pause_binary, 0o755)}, {}, ["/pause"]
    )
    busybox = BUSYBOX.read_bytes()
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    files: dict[str, tuple[bytes, int]] = {
        "bin/busybox": (busybox, 0o755),
        "www/index.html": (INDEX_HTML, 0o644),
        "etc/passwd": (b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n", 0o644),
        "etc/group": (b"root:x:0:\nnobody:x:65534:\n", 0o644),
    }
    links = {f"bin/{name}": "busybox" for name in applets if name != "busybox"}
    write_archive(staging / "app.tar", APP_IMAGE, files, links, None)
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    return Images(pause, archives)


def write_archive(
    path: Path,
    reference: str,
    files: Mapping[str, tuple[bytes | Path, int]],
    symlinks: Mapping[str, str],
    entrypoint: list[str] | None,
    env: list[str] | None = None,
    user: str = "",
    directories: list[str] | None = None,
    command: list[str] | None = None,
) -> None:
    """A one-layer docker-archive image, root-owned and sorted. Contents given as bytes get
    mtime 0; files copied from disk keep theirs, so their bytecode caches stay valid."""
    with tempfile.TemporaryFile() as layer_file:
        with tarfile.open(fileobj=layer_file, mode="w", format=tarfile.PAX_FORMAT) as layer:
            names = [*files, *symlinks, *(directories or [])]
            parents = {str(parent) for name in names for parent in Path(name).parents}
            for name in sorted((parents | set(directories or [])) - {"."}):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
                layer.addfile(info)
            for name, (source, mode) in sorted(files.items()):
                info = tarfile.TarInfo(name)
                info.mode = mode
                if isinstance(source, Path):
                    stat = source.stat()
                    info.size, info.mtime = stat.st_size, int(stat.st_mtime)
                    with source.open("rb") as handle:
                        layer.addfile(info, handle)
                else:
                    info.size = len(source)
                    layer.addfile(info, io.BytesIO(source))
            for name, target in sorted(symlinks.items()):
                info = tarfile.TarInfo(name)
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
                layer.addfile(info)
        layer_file.seek(0)
        digest = hashlib.sha256()
        while chunk := layer_file.read(1 << 20):
            digest.update(chunk)
        diff_id = digest.hexdigest()
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": entrypoint,
                "Cmd": command,
                "Env": env or ["PATH=/bin"],
                "User": user,
                "WorkingDir": "/",
            },
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created_by": "tests/node/images.py"}],
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        manifest = [
            {"Config": config_name, "RepoTags": [reference], "Layers": [f"{diff_id}/layer.tar"]}
        ]
        with tarfile.open(path, "w") as archive:
            for name, data in (
                (config_name, config_bytes),
                ("manifest.json", json.dumps(manifest).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                archive.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo(f"{diff_id}/layer.tar")
            info.size, info.mode = layer_file.tell(), 0o644
            layer_file.seek(0)
            archive.addfile(info, layer_file)


if __name__ == "__main__":
    # `python -m tests.node.images`: build (or reuse) them and print where they are.
    print(build_images().pause_binary.parent)
