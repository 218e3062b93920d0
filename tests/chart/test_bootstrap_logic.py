"""The certificate bootstrap's decisions (webhook.certs_policy), its Secret layout, its caBundle
patch and its file writer, without a cluster: time is a parameter, keys are real."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import os
import stat
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from cryptography import x509

from webhook import bootstrap
from webhook import certs_policy as cp
from webhook.certs import KeyPair, generate_ca, generate_serving, service_dns_names
from webhook.certs_policy import CertState, Policy

NAMES = service_dns_names("lcw-lifecycle-webhook", "lifecycle-system")
POLICY = Policy(ca_days=730, leaf_days=30)
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


class ClockIssuer:
    """Issues real certificates with webhook.certs as of `now`, so a test can live through
    years of renewals in milliseconds."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self.issued = 0

    def ca(self, days: int) -> KeyPair:
        self.issued += 1
        return generate_ca(f"test CA {self.issued}", days=days, now=self.now)

    def serving(self, signer: KeyPair, dns_names: list[str], days: int) -> KeyPair:
        self.issued += 1
        return generate_serving(signer, dns_names, days=days, now=self.now)


def cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def fresh(now: dt.datetime = T0) -> tuple[CertState, ClockIssuer]:
    issuer = ClockIssuer(now)
    state, decision = cp.reconcile(None, now, POLICY, NAMES, issuer)
    assert state is not None and decision.signer == "create"
    return state, issuer


def step(
    state: CertState | None, now: dt.datetime, issuer: ClockIssuer
) -> tuple[CertState, cp.Decision]:
    issuer.now = now
    new_state, decision = cp.reconcile(state, now, POLICY, NAMES, issuer)
    final = new_state or state
    assert final is not None
    return final, decision


# --- the renewal decision ----------------------------------------------------------------


def test_nothing_yet_means_create_everything() -> None:
    decision = cp.decide(None, T0, POLICY, NAMES)
    assert decision.signer == "create" and decision.renew_serving
    state, _ = fresh()
    assert state.bundle == (state.signer.cert_pem,)
    assert state.next_signer is None
    assert cp.dns_names_of(cert(state.serving.cert_pem)) == frozenset(NAMES)
    assert cp.issued_by(cert(state.serving.cert_pem), cert(state.signer.cert_pem))


@pytest.mark.parametrize(
    ("days", "renew"),
    [(0, False), (1, False), (19, False), (19.99, False), (20, True), (29, True), (31, True)],
)
def test_serving_certificate_renews_at_two_thirds_of_its_life(days: float, renew: bool) -> None:
    state, _ = fresh()
    decision = cp.decide(state, T0 + dt.timedelta(days=days), POLICY, NAMES)
    assert decision.renew_serving is renew
    assert decision.signer == "keep" and not decision.publish_next


def test_a_current_state_changes_nothing() -> None:
    state, issuer = fresh()
    new_state, decision = cp.reconcile(state, T0 + DAY, POLICY, NAMES, issuer)
    assert new_state is None and not decision.changes and decision.reasons == ()


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        ("names", "names differ"),
        ("other signer", "not signed by the signing CA"),
        ("garbage", "unreadable"),
        ("wrong key", "key does not match"),
    ],
)
def test_serving_certificate_renews_when_it_no_longer_fits(breakage: str, reason: str) -> None:
    state, issuer = fresh()
    if breakage == "names":
        serving = issuer.serving(state.signer, ["old-name.lifecycle-system.svc"], 30)
    elif breakage == "other signer":
        serving = issuer.serving(issuer.ca(730), NAMES, 30)
    elif breakage == "garbage":
        serving = KeyPair(b"not a certificate", state.serving.key_pem)
    else:
        serving = KeyPair(state.serving.cert_pem, issuer.serving(state.signer, NAMES, 30).key_pem)
    broken = CertState(state.signer, serving, state.bundle)
    decision = cp.decide(broken, T0 + DAY, POLICY, NAMES)
    assert decision.renew_serving and decision.signer == "keep"
    assert any(reason in r for r in decision.reasons), decision.reasons
    repaired, _ = step(broken, T0 + DAY, issuer)
    assert cp.decide(repaired, T0 + DAY, POLICY, NAMES).changes is False


def test_a_replica_with_a_slow_clock_keeps_a_fresh_certificate() -> None:
    """Certificates issued by a replica whose clock runs ahead (within 10 minutes beyond the
    5-minute backdating) are not replaced by the others; further ahead they are."""
    state, _ = fresh(T0 + dt.timedelta(minutes=14))
    assert cp.decide(state, T0, POLICY, NAMES).changes is False
    state, _ = fresh(T0 + dt.timedelta(minutes=16))
    assert cp.decide(state, T0, POLICY, NAMES).signer == "create"


def test_ca_change_publishes_first_and_signs_later() -> None:
    """2/3 of the CA's life: a next CA joins the bundle but signs nothing; 5/6: it signs."""
    state, issuer = fresh()
    publish_at = T0 + dt.timedelta(days=730 * 2 / 3) + dt.timedelta(hours=1)
    state, _ = step(state, publish_at - 2 * DAY, issuer)  # ordinary renewals meanwhile
    old_signer = state.signer
    state, decision = step(state, publish_at, issuer)
    assert decision.publish_next and decision.signer == "keep"
    assert state.signer == old_signer and state.next_signer is not None
    assert state.bundle == (old_signer.cert_pem, state.next_signer.cert_pem)
    assert cp.issued_by(cert(state.serving.cert_pem), cert(old_signer.cert_pem))

    promote_at = T0 + dt.timedelta(days=730 * 5 / 6) + dt.timedelta(hours=1)
    before, _ = step(state, promote_at - dt.timedelta(hours=2), issuer)
    assert before.signer == old_signer
    next_signer = before.next_signer
    assert next_signer is not None
    after, decision = step(before, promote_at, issuer)
    assert decision.signer == "promote" and decision.renew_serving
    assert after.signer == next_signer and after.next_signer is None
    assert cp.issued_by(cert(after.serving.cert_pem), cert(next_signer.cert_pem))
    assert after.bundle == (old_signer.cert_pem, next_signer.cert_pem)  # overlap


def test_expired_ca_is_pruned_from_the_bundle() -> None:
    state, issuer = fresh()
    original = state.signer.cert_pem
    now = T0
    while now < T0 + dt.timedelta(days=729):
        state, _ = step(state, now, issuer)
        now += DAY
    assert state.signer.cert_pem != original  # promoted long ago...
    assert state.bundle == (original, state.signer.cert_pem)  # ...but still trusted
    state, decision = step(state, T0 + dt.timedelta(days=730, hours=1), issuer)
    assert decision.prune == (original,)
    assert decision.signer == "keep"
    assert state.bundle == (state.signer.cert_pem,)


def test_a_promotion_waits_for_the_next_ca_to_have_been_published_a_while() -> None:
    """Found late (5/6 passed with no next CA): publish now, sign only after min_publish."""
    state, issuer = fresh()
    late = T0 + dt.timedelta(days=700)
    state, decision = step(state, late, issuer)
    assert decision.publish_next and decision.signer == "keep"
    state, decision = step(state, late + dt.timedelta(minutes=30), issuer)
    assert decision.signer == "keep"
    # a full hour, although notBefore is backdated by CLOCK_SKEW (5 minutes)
    state, decision = step(state, late + dt.timedelta(minutes=59), issuer)
    assert decision.signer == "keep"
    state, decision = step(state, late + dt.timedelta(hours=1), issuer)
    assert decision.signer == "promote"


def test_an_expired_signer_with_a_published_next_ca_promotes_at_once() -> None:
    state, issuer = fresh()
    state, _ = step(state, T0 + dt.timedelta(days=500), issuer)
    assert state.next_signer is not None
    dead = T0 + dt.timedelta(days=731)
    decision = cp.decide(state, dead, POLICY, NAMES)
    assert decision.signer == "promote" and decision.renew_serving


def test_an_expired_signer_without_a_next_ca_starts_over() -> None:
    state, issuer = fresh()
    dead = T0 + dt.timedelta(days=800)
    state, decision = step(state, dead, issuer)
    assert decision.signer == "create"
    assert state.bundle == (state.signer.cert_pem,)  # the expired CA is gone
    assert cert(state.signer.cert_pem).not_valid_before_utc <= dead


def test_an_unusable_next_ca_is_replaced() -> None:
    """A next CA whose key was lost (it never signed anything) leaves the bundle."""
    state, issuer = fresh()
    state, _ = step(state, T0 + dt.timedelta(days=500), issuer)
    assert state.next_signer is not None
    lost_key = KeyPair(state.next_signer.cert_pem, issuer.ca(730).key_pem)
    broken = CertState(state.signer, state.serving, state.bundle, lost_key)
    repaired, decision = step(broken, T0 + dt.timedelta(days=501), issuer)
    assert decision.drop_next and decision.publish_next and decision.signer == "keep"
    assert repaired.next_signer is not None
    assert repaired.bundle == (state.signer.cert_pem, repaired.next_signer.cert_pem)


def test_serving_certificate_never_outlives_its_signer() -> None:
    state, issuer = fresh()
    near_end = T0 + dt.timedelta(days=720)
    signer_end = cert(state.signer.cert_pem).not_valid_after_utc
    assert cp.serving_days(state.signer, near_end, POLICY) == (signer_end - near_end).days
    assert cp.serving_days(state.signer, T0, POLICY) == 30


def test_policy_rejects_a_leaf_too_long_for_the_ca() -> None:
    with pytest.raises(ValueError, match="6 \\* leaf days"):
        Policy(ca_days=100, leaf_days=30)
    with pytest.raises(ValueError, match="at least 1"):
        Policy(ca_days=100, leaf_days=0)


def test_three_ca_lifetimes_keep_every_served_certificate_trusted() -> None:
    """Every 6 hours for ~6 years, after each pass:
    - the serving certificate is valid and chains to a CA in the bundle;
    - the serving certificate a replica wrote on the previous pass (not re-read yet) also
      still chains to a CA in the new bundle while it is valid (the overlap);
    - a CA signs only after it has been in the bundle for min_publish;
    - the bundle never holds an expired CA and never more than three."""
    state, issuer = fresh()
    first_seen: dict[bytes, dt.datetime] = {state.signer.cert_pem: T0 - POLICY.min_publish}
    signers = {state.signer.cert_pem}
    now = T0
    end = T0 + dt.timedelta(days=3 * 730 + 30)
    while now < end:
        previous = state
        state, _ = step(state, now, issuer)
        for pem in state.bundle:
            first_seen.setdefault(pem, now)
        bundle = [cert(p) for p in state.bundle]
        serving = cert(state.serving.cert_pem)
        assert serving.not_valid_before_utc <= now < serving.not_valid_after_utc
        assert any(cp.issued_by(serving, ca) for ca in bundle if now < ca.not_valid_after_utc)
        old = cert(previous.serving.cert_pem)
        if now < old.not_valid_after_utc:
            assert any(cp.issued_by(old, ca) for ca in bundle)
        if state.signer.cert_pem not in signers:
            signers.add(state.signer.cert_pem)
            assert now - first_seen[state.signer.cert_pem] >= POLICY.min_publish
        assert all(now < ca.not_valid_after_utc for ca in bundle)
        assert 1 <= len(bundle) <= 3
        now += dt.timedelta(hours=6)
    assert len(signers) >= 3  # it really went through CA changes


# --- Secret layout and the caBundle patch --------------------------------------------------


def test_secret_layout_round_trips() -> None:
    state, issuer = fresh()
    state, _ = step(state, T0 + dt.timedelta(days=500), issuer)  # with a next CA
    data = cp.secret_data(state)
    assert set(data) == {
        "tls.crt",
        "tls.key",
        "ca.crt",
        "ca-signer.crt",
        "ca-signer.key",
        "ca-next.crt",
        "ca-next.key",
    }
    decoded = {k: base64.b64decode(v) for k, v in data.items()}
    assert decoded["tls.crt"] == state.serving.cert_pem
    assert decoded["ca.crt"] == b"".join(state.bundle)
    assert cp.state_from_secret_data(data) == state
    plain, _ = fresh()
    assert set(cp.secret_data(plain)) == {
        "tls.crt",
        "tls.key",
        "ca.crt",
        "ca-signer.crt",
        "ca-signer.key",
    }


@pytest.mark.parametrize(
    "data",
    [None, {}, {"tls.crt": "!!!"}, {"tls.crt": base64.b64encode(b"x").decode()}],
)
def test_an_incomplete_secret_reads_as_nothing(data: dict[str, str] | None) -> None:
    assert cp.state_from_secret_data(data) is None


def test_a_secret_missing_one_key_reads_as_nothing() -> None:
    state, _ = fresh()
    for key in ("tls.crt", "tls.key", "ca.crt", "ca-signer.crt", "ca-signer.key"):
        data = cp.secret_data(state)
        del data[key]
        assert cp.state_from_secret_data(data) is None, key


OWNER = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "MutatingWebhookConfiguration",
    "name": "lcw-lifecycle-webhook",
    "uid": "1111",
}


def test_secret_manifest_for_create_and_for_replace() -> None:
    state, _ = fresh()
    created = cp.secret_manifest("tls", "ns", state, OWNER)
    assert created["type"] == "kubernetes.io/tls"
    assert created["metadata"]["ownerReferences"] == [OWNER]
    assert "resourceVersion" not in created["metadata"]
    existing = {
        "metadata": {
            "name": "tls",
            "resourceVersion": "42",
            "labels": {"team": "platform"},
            "annotations": {"note": "kept"},
            "ownerReferences": [
                {**OWNER, "uid": "0000"},  # a configuration that was deleted and recreated
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "2"},
            ],
        }
    }
    replaced = cp.secret_manifest("tls", "ns", state, OWNER, existing)
    meta = replaced["metadata"]
    assert meta["resourceVersion"] == "42"  # optimistic concurrency: a stale writer gets 409
    assert meta["labels"] == {"team": "platform", "app.kubernetes.io/managed-by": cp.MANAGED_BY}
    assert meta["annotations"] == {"note": "kept"}
    assert meta["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "2"},
        OWNER,
    ]
    assert not cp.owner_is_current(existing, OWNER)
    assert cp.owner_is_current(replaced, OWNER)
    assert cp.owner_is_current(existing, None)


def configuration(ca_bundles: list[str | None]) -> dict[str, Any]:
    webhooks = []
    for index, bundle in enumerate(ca_bundles):
        client: dict[str, Any] = {"service": {"name": "s", "namespace": "n", "path": "/mutate"}}
        if bundle is not None:
            client["caBundle"] = bundle
        webhooks.append({"name": f"w{index}.pods.lifecycle-webhook.io", "clientConfig": client})
    return {"metadata": {"name": "c", "uid": "u", "resourceVersion": "41"}, "webhooks": webhooks}


def test_ca_bundle_patch_sets_every_webhook_and_is_empty_when_current() -> None:
    state, _ = fresh()
    bundle = cp.bundle_pem(state)
    wanted = base64.b64encode(bundle).decode()
    config = configuration([None, "b2xk"])
    ops = cp.ca_bundle_patch(config, bundle)
    assert ops == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "41"},
        {"op": "test", "path": "/webhooks/0/name", "value": "w0.pods.lifecycle-webhook.io"},
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": wanted},
        {"op": "test", "path": "/webhooks/1/name", "value": "w1.pods.lifecycle-webhook.io"},
        {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": wanted},
    ]
    patched = jsonpatch.apply_patch(config, ops)
    assert [h["clientConfig"]["caBundle"] for h in patched["webhooks"]] == [wanted, wanted]
    assert (
        patched["webhooks"][0]["clientConfig"]["service"]
        == config["webhooks"][0]["clientConfig"]["service"]
    )
    assert cp.ca_bundle_patch(patched, bundle) == []
    half = configuration([wanted, None])
    assert [op["path"] for op in cp.ca_bundle_patch(half, bundle)] == [
        "/metadata/resourceVersion",
        "/webhooks/1/name",
        "/webhooks/1/clientConfig/caBundle",
    ]


def test_ca_bundle_patch_fails_on_a_configuration_changed_meanwhile() -> None:
    state, _ = fresh()
    ops = cp.ca_bundle_patch(configuration([None, None]), cp.bundle_pem(state))
    reordered = configuration([None, None])
    reordered["webhooks"].reverse()
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(reordered, ops)


def test_ca_bundle_patch_applies_only_to_the_configuration_that_was_read() -> None:
    """Any write since the read (another replica's caBundle patch, say) changes the
    resourceVersion: the patch must fail rather than put this replica's bundle back."""
    state, _ = fresh()
    read = configuration([None, None])
    ops = cp.ca_bundle_patch(read, cp.bundle_pem(state))
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "41"}
    jsonpatch.apply_patch(read, ops)  # unchanged since the read: applies
    newer = configuration(["bmV3ZXI=", "bmV3ZXI="])  # same names, patched meanwhile
    newer["metadata"]["resourceVersion"] = "42"
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(newer, ops)


def test_bundle_pem_splits_back_into_its_certificates() -> None:
    state, issuer = fresh()
    state, _ = step(state, T0 + dt.timedelta(days=500), issuer)
    assert len(state.bundle) == 2
    assert cp.split_pem_bundle(cp.bundle_pem(state)) == state.bundle
    assert cp.split_pem_bundle(b"# comment\n" + cp.bundle_pem(state) + b"trailer") == state.bundle


def test_owner_reference_names_the_configuration() -> None:
    assert cp.owner_reference(configuration([None])) == {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "name": "c",
        "uid": "u",
    }


# --- the real issuer and the files the server reads -------------------------------------


def test_the_real_issuer_makes_a_state_the_policy_accepts() -> None:
    now = dt.datetime.now(dt.UTC)
    state, decision = cp.reconcile(None, now, POLICY, NAMES, bootstrap.CryptoIssuer())
    assert state is not None
    assert cp.decide(state, now, POLICY, NAMES).changes is False
    serving = cert(state.serving.cert_pem)
    assert cp.dns_names_of(serving) == frozenset(NAMES)
    assert dt.timedelta(days=29) < serving.not_valid_after_utc - now <= dt.timedelta(days=30)
    assert (
        cert(state.signer.cert_pem).subject.rfc4514_string().startswith("CN=lifecycle-webhook CA ")
    )


def test_files_switch_all_at_once_and_only_when_changed(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    state, issuer = fresh()
    assert bootstrap.write_files(out, bootstrap.files_for(state)) is True
    assert (out / "tls.crt").read_bytes() == state.serving.cert_pem
    assert (out / "tls.key").read_bytes() == state.serving.key_pem
    assert (out / "ca.crt").read_bytes() == cp.bundle_pem(state)
    assert stat.S_IMODE((out / "tls.key").stat().st_mode) == 0o600
    for name in ("tls.crt", "tls.key", "ca.crt"):
        assert os.readlink(out / name) == f"..data/{name}"
    first_target = os.readlink(out / "..data")
    mtime = (out / "..data").lstat().st_mtime_ns

    assert bootstrap.write_files(out, bootstrap.files_for(state)) is False
    assert os.readlink(out / "..data") == first_target
    assert (out / "..data").lstat().st_mtime_ns == mtime

    renewed, _ = step(state, T0 + 21 * DAY, issuer)
    assert bootstrap.write_files(out, bootstrap.files_for(renewed)) is True
    assert os.readlink(out / "..data") != first_target
    assert (out / "tls.crt").read_bytes() == renewed.serving.cert_pem
    assert not (out / first_target).exists()  # the old generation is gone
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("..certs-")) == [
        "..data",
        "ca.crt",
        "tls.crt",
        "tls.key",
    ]


def test_files_replace_plain_files_left_by_another_writer(tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_bytes(b"old")
    state, _ = fresh()
    assert bootstrap.write_files(tmp_path, bootstrap.files_for(state)) is True
    assert (tmp_path / "tls.crt").is_symlink()
    assert (tmp_path / "tls.crt").read_bytes() == state.serving.cert_pem


# --- arguments --------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bootstrap.add_certs_bootstrap_arguments(parser)
    return parser.parse_args(argv)


def test_arguments_default_the_namespace_from_the_downward_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "lifecycle-system")
    target = bootstrap.target_from_args(parse(["--secret", "s", "--service", "svc"]))
    assert target.namespace == "lifecycle-system"
    assert target.dns_names == service_dns_names("svc", "lifecycle-system")
    assert target.webhook_config is None and target.out is None
    assert target.policy == Policy(ca_days=730, leaf_days=30)


def test_bad_arguments_are_all_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    args = parse(
        ["--secret", "Bad_Name", "--service", "svc.x", "--namespace", "NS", "--leaf-days", "400"]
    )
    with pytest.raises(ValueError, match="--namespace") as info:
        bootstrap.target_from_args(args)
    message = str(info.value)
    assert "--secret" in message and "--service" in message and "6 * leaf days" in message


def test_run_exits_2_on_bad_arguments_without_contacting_anything(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    code = bootstrap.run_certs_bootstrap(
        parse(["--secret", "s", "--service", "svc", "--namespace", "n", "--ca-days", "10"])
    )
    assert code == 2
    assert "6 * leaf days" in capfd.readouterr().err


def test_run_exits_2_without_a_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    code = bootstrap.run_certs_bootstrap(
        parse(["--secret", "s", "--service", "svc", "--namespace", "n"])
    )
    assert code == 2
    assert "no cluster configured" in capfd.readouterr().err
