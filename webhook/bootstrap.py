"""`lifecycle-webhook certs bootstrap`: keeps the webhook's TLS pair in a Secret, in files and
in caBundle, for the chart's `certs.source: self`.

The I/O around `webhook.certs_policy`, which decides everything. Several replicas run this at
once; the Secret's resourceVersion makes exactly one of them the writer of each change (create
fails with 409 for all but one, replace fails with 409 on a stale read), and the others re-read
and find nothing left to do. Each pass reads the webhook configuration before the Secret and
patches caBundle only if the configuration is still at that resourceVersion, so a replica
never publishes a bundle older than one another replica published meanwhile.

One-shot (init container): make the Secret fresh, write the files, patch caBundle, exit.
`--watch` (sidecar): the same every `--interval` seconds, and every few seconds while the
webhook configuration is missing or an API call failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from webhook import certs_policy as policy_module
from webhook.certs import KeyPair, generate_ca, generate_serving, not_after, service_dns_names
from webhook.certs_policy import CertState, Policy
from webhook.logs import JsonLog

WRITE_ATTEMPTS = 5
"""Conflicting writes re-read and retry; each retry sees a newer Secret, so few are needed."""
RETRY_SECONDS = 5.0
"""The watch loop's wait after a failure or while the webhook configuration is missing."""
ONE_SHOT_ATTEMPTS = 3
REQUEST_TIMEOUT = (5, 15)
"""Connect and read timeouts of each API call (seconds)."""
DATA_LINK = "..data"
"""The directory symlink swapped to change every file at once (what the kubelet does)."""
FILES = (
    ("tls.crt", policy_module.TLS_CERT, 0o644),
    ("tls.key", policy_module.TLS_KEY, 0o600),
    ("ca.crt", policy_module.CA_BUNDLE, 0o644),
)

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class BootstrapError(Exception):
    """An API answer that retrying in this run will not fix."""


@dataclass(frozen=True, slots=True)
class Target:
    secret: str
    namespace: str
    service: str
    webhook_config: str | None
    out: Path | None
    policy: Policy

    @property
    def dns_names(self) -> list[str]:
        return service_dns_names(self.service, self.namespace)


class CryptoIssuer:
    """New pairs from `webhook.certs`; each CA gets a distinct name so bundles stay readable."""

    def ca(self, days: int) -> KeyPair:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return generate_ca(common_name=f"lifecycle-webhook CA {stamp}", days=days)

    def serving(self, signer: KeyPair, dns_names: list[str], days: int) -> KeyPair:
        return generate_serving(signer, dns_names, days=days)


# --- files -------------------------------------------------------------------------------


def write_files(directory: Path, files: Mapping[str, tuple[bytes, int]]) -> bool:
    """Make `directory/<name>` hold these bytes, all switching at the same instant.

    Files live in a fresh hidden directory; `..data` points at it and each name is a symlink
    through `..data`, so one rename swaps the whole set (a reader never pairs a new
    certificate with an old key). Returns False, touching nothing, when already current.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if all(_same_file(directory / name, data) for name, (data, _) in files.items()):
        return False
    fresh = Path(tempfile.mkdtemp(dir=directory, prefix="..certs-"))
    for name, (data, mode) in files.items():
        path = fresh / name
        with path.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        path.chmod(mode)
    fresh.chmod(0o755)
    _replace_symlink(directory / DATA_LINK, fresh.name)
    for name in files:
        link = directory / name
        target = f"{DATA_LINK}/{name}"
        if not (link.is_symlink() and os.readlink(link) == target):
            _replace_symlink(link, target)
    for old in directory.glob("..certs-*"):
        if old.name != fresh.name and old.is_dir() and not old.is_symlink():
            for child in old.iterdir():
                child.unlink()
            old.rmdir()
    return True


def _same_file(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False


def _replace_symlink(link: Path, target: str) -> None:
    temporary = link.with_name(f"{link.name}.tmp-{os.getpid()}")
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.replace(temporary, link)


def files_for(state: CertState) -> dict[str, tuple[bytes, int]]:
    contents = {
        policy_module.TLS_CERT: state.serving.cert_pem,
        policy_module.TLS_KEY: state.serving.key_pem,
        policy_module.CA_BUNDLE: policy_module.bundle_pem(state),
    }
    return {name: (contents[key], mode) for name, key, mode in FILES}


# --- the API server ----------------------------------------------------------------------


class Cluster:
    """The three calls the bootstrap makes, on plain dicts (JSON in, JSON out)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        # Any: raw JSON (`_preload_content=False`) is not what the client's hints describe.
        self.core: Any = client.CoreV1Api(api_client)
        self.admission: Any = client.AdmissionregistrationV1Api(api_client)

    def _call(self, method: Any, *args: Any, tolerate: tuple[int, ...]) -> Any:
        """The raw response, or None when the API server answered a status in `tolerate`
        (404: gone; 409 or 422: changed since it was read; the caller re-reads)."""
        from kubernetes.client.exceptions import ApiException

        try:
            return method(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status in tolerate:
                return None
            raise

    def read_secret(self, name: str, namespace: str) -> dict[str, Any] | None:
        response = self._call(self.core.read_namespaced_secret, name, namespace, tolerate=(404,))
        return None if response is None else dict(json.loads(response.data))

    def create_secret(self, namespace: str, body: Mapping[str, Any]) -> bool:
        """True when created; False when someone else created it first (409)."""
        created = self._call(self.core.create_namespaced_secret, namespace, body, tolerate=(409,))
        return created is not None

    def replace_secret(self, name: str, namespace: str, body: Mapping[str, Any]) -> bool:
        """True when replaced; False when the Secret changed since it was read (409)."""
        replaced = self._call(
            self.core.replace_namespaced_secret, name, namespace, body, tolerate=(404, 409)
        )
        return replaced is not None

    def read_webhook_config(self, name: str) -> dict[str, Any] | None:
        response = self._call(
            self.admission.read_mutating_webhook_configuration, name, tolerate=(404,)
        )
        return None if response is None else dict(json.loads(response.data))

    def patch_webhook_config(self, name: str, ops: list[dict[str, Any]]) -> bool:
        """True when patched; False when a `test` failed or it vanished (re-read and retry)."""
        patched = self._call(
            self.admission.patch_mutating_webhook_configuration,
            name,
            ops,
            tolerate=(404, 409, 422),
        )
        return patched is not None


def sync_secret(
    cluster: Cluster,
    target: Target,
    owner: Mapping[str, Any] | None,
    issuer: policy_module.Issuer,
    log: JsonLog,
    clock: Callable[[], dt.datetime],
    published: Sequence[bytes] = (),
) -> CertState:
    """The Secret's state after making it fresh (written by us or by a faster replica).

    `published`: the caBundle values the webhook configuration holds now; a CA created anew
    keeps trusting the CAs among them until they expire."""
    for _ in range(WRITE_ATTEMPTS):
        now = clock()
        existing = cluster.read_secret(target.secret, target.namespace)
        if existing is not None and existing.get("type") != "kubernetes.io/tls":
            raise BootstrapError(
                f"Secret {target.namespace}/{target.secret} has type {existing.get('type')!r},"
                " not kubernetes.io/tls; delete it and the bootstrap recreates it"
            )
        state = policy_module.state_from_secret_data(existing.get("data") if existing else None)
        new_state, decision = policy_module.reconcile(
            state, now, target.policy, target.dns_names, issuer, published
        )
        adopt = existing is not None and not policy_module.owner_is_current(existing, owner)
        if new_state is None and not adopt:
            assert state is not None  # reconcile changes every missing state
            return state
        final = new_state or state
        assert final is not None
        body = policy_module.secret_manifest(
            target.secret, target.namespace, final, owner, existing
        )
        if existing is None:
            written = cluster.create_secret(target.namespace, body)
        else:
            written = cluster.replace_secret(target.secret, target.namespace, body)
        if written:
            log.event(
                "certs secret written",
                secret=f"{target.namespace}/{target.secret}",
                created=existing is None,
                reasons=list(decision.reasons) + (["owner reference updated"] if adopt else []),
                serving_not_after=not_after(final.serving.cert_pem).isoformat(),
                cas_trusted=len(final.bundle),
            )
            return final
        log.event("certs secret changed meanwhile; reading it again", level="debug")
    raise BootstrapError(f"Secret {target.namespace}/{target.secret} kept changing under us")


def reconcile_once(
    cluster: Cluster,
    target: Target,
    issuer: policy_module.Issuer,
    log: JsonLog,
    clock: Callable[[], dt.datetime],
) -> bool:
    """One full pass; True when everything is current (False: look again soon).

    The configuration is read before the Secret, and the caBundle patch `test`s that read's
    resourceVersion: when another replica changed the configuration since (and so maybe the
    Secret before it), the patch fails and both are read again."""
    name = target.webhook_config
    for _ in range(WRITE_ATTEMPTS):
        configuration = cluster.read_webhook_config(name) if name else None
        owner = policy_module.owner_reference(configuration) if configuration else None
        published = policy_module.published_bundles(configuration)
        state = sync_secret(cluster, target, owner, issuer, log, clock, published)
        if target.out is not None and write_files(target.out, files_for(state)):
            log.event("certificate files written", out=str(target.out))
        if not name:
            return True
        if configuration is None:
            log.event(
                "webhook configuration not found yet; caBundle not patched",
                level="warning",
                webhook_config=name,
            )
            return False
        ops = policy_module.ca_bundle_patch(configuration, policy_module.bundle_pem(state))
        if not ops:
            return True
        if cluster.patch_webhook_config(name, ops):
            changed = sum(1 for op in ops if op["op"] == "add")
            log.event("caBundle patched", webhook_config=name, webhooks=changed)
            return True
        log.event(
            "webhook configuration changed meanwhile; reading it and the Secret again",
            level="debug",
        )
    log.event(
        "webhook configuration kept changing; caBundle not patched in this pass",
        level="warning",
        webhook_config=name,
    )
    return False


# --- command line ------------------------------------------------------------------------


def add_certs_bootstrap_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--secret", required=True, help="Secret that holds the CA and pair")
    parser.add_argument(
        "--namespace",
        default=None,
        help="namespace of the Secret and Service (default: $POD_NAMESPACE, else the pod's)",
    )
    parser.add_argument("--service", required=True, help="the webhook's Service name")
    parser.add_argument(
        "--webhook-config",
        default=None,
        help="MutatingWebhookConfiguration to keep caBundle current in (it owns the Secret)",
    )
    parser.add_argument("--out", default=None, help="directory for tls.crt, tls.key and ca.crt")
    parser.add_argument("--watch", action="store_true", help="keep running and renew before expiry")
    parser.add_argument(
        "--interval", type=int, default=60, help="seconds between checks with --watch (60)"
    )
    parser.add_argument("--ca-days", type=int, default=730, help="CA lifetime in days (730)")
    parser.add_argument(
        "--leaf-days", type=int, default=30, help="serving certificate lifetime in days (30)"
    )
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig (default: in-cluster)")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def _default_namespace() -> str | None:
    from_env = os.environ.get("POD_NAMESPACE")
    if from_env:
        return from_env
    try:
        return _NAMESPACE_FILE.read_text().strip() or None
    except OSError:
        return None


def target_from_args(args: argparse.Namespace) -> Target:
    """The validated arguments; ValueError names every problem at once."""
    problems = []
    namespace = args.namespace or _default_namespace()
    if not namespace or not _DNS_LABEL.fullmatch(namespace):
        problems.append(f"--namespace {namespace!r} is not a namespace name (or is missing)")
    if not _DNS_LABEL.fullmatch(args.service or ""):
        problems.append(f"--service {args.service!r} is not a Service name")
    if not _DNS_SUBDOMAIN.fullmatch(args.secret or ""):
        problems.append(f"--secret {args.secret!r} is not a Secret name")
    if args.webhook_config is not None and not _DNS_SUBDOMAIN.fullmatch(args.webhook_config):
        problems.append(f"--webhook-config {args.webhook_config!r} is not an object name")
    if args.interval < 1:
        problems.append(f"--interval {args.interval} must be at least 1")
    policy = None
    try:
        policy = Policy(ca_days=args.ca_days, leaf_days=args.leaf_days)
    except ValueError as exc:
        problems.append(str(exc))
    if problems or policy is None or namespace is None:
        raise ValueError("; ".join(problems))
    return Target(
        secret=args.secret,
        namespace=namespace,
        service=args.service,
        webhook_config=args.webhook_config,
        out=Path(args.out) if args.out else None,
        policy=policy,
    )


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run_certs_bootstrap(args: argparse.Namespace) -> int:
    """0 when current (one-shot) or stopped by a signal (--watch); 1 on API failure; 2 on usage."""
    log = JsonLog(level=args.log_level)
    try:
        target = target_from_args(args)
    except ValueError as exc:
        log.event("certs bootstrap: bad arguments", level="error", error=str(exc))
        return 2
    from webhook.cluster.api import ClusterConfigError, load_api_client

    try:
        api_client = load_api_client(args.kubeconfig)
    except ClusterConfigError as exc:
        log.event("certs bootstrap: no cluster", level="error", error=str(exc))
        return 2
    if api_client is None:
        log.event(
            "certs bootstrap: no cluster configured (not in a pod, no kubeconfig)", level="error"
        )
        return 2
    cluster = Cluster(api_client)
    issuer = CryptoIssuer()
    stop = threading.Event()
    _stop_on_signals(stop)

    def attempt() -> bool | None:
        """True/False as reconcile_once; None when the pass failed."""
        try:
            return reconcile_once(cluster, target, issuer, log, _utc_now)
        except Exception as exc:  # any API or file error: report, retry on the next pass
            log.event("certs bootstrap pass failed", level="error", error=f"{exc!r}"[:2000])
            return None

    if not args.watch:
        for number in range(ONE_SHOT_ATTEMPTS):
            if attempt() is not None:
                return 0  # a missing configuration is the sidecar's to finish
            if number + 1 < ONE_SHOT_ATTEMPTS and stop.wait(RETRY_SECONDS):
                break
        return 1
    log.event("certs bootstrap watching", secret=f"{target.namespace}/{target.secret}")
    current = attempt()
    while not stop.wait(args.interval if current else min(RETRY_SECONDS, args.interval)):
        current = attempt()
    log.event("certs bootstrap stopped")
    return 0


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handler)
