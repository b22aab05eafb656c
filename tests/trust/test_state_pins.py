"""Pinned roots and rotations between recorded roots (app/notary/pins.py, app/notary/trusted.py), on forged trust data.

A pin is material from a Secret: public keys / certificates (`publicKeys`) or CA certificates
(`caCertificates`). root.json must be signed by pinned keys (or keys whose certificates a pinned CA
issued) to the root role's threshold; anything else is refused, whatever TOFU would have said.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.notary.errors import BadRootRotation, CertificateError, RollbackAttack, ThresholdNotMet
from app.notary.pins import pem_blocks, root_pin
from app.notary.trusted import TrustedRepository, check_rotation
from app.notary.walker import walk
from tests.trust.forge import GUN, NOW, ForgedKey, ForgedRepo, _b64, ecdsa_key, x509_key


def load_pinned(files: dict[str, bytes], *pins) -> TrustedRepository:
    return walk(TrustedRepository(GUN, NOW, pinned_roots=pins), files.get).repository


def public_pem(key: ForgedKey) -> str:
    return (
        key.private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def cert_pem(key: ForgedKey) -> str:
    import base64

    return base64.b64decode(key.public).decode()


def make_ca(name: str = "Example Root CA", *, is_ca: bool = True):
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=365))
        .not_valid_after(NOW + timedelta(days=3650))
    )
    if is_ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    cert = builder.sign(private, hashes.SHA256())
    return private, cert


def issued_root_key(ca_private, ca_cert) -> ForgedKey:
    """An ecdsa-x509 root key whose certificate (CN = the GUN) the CA issued."""
    private = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GUN)]))
        .issuer_name(ca_cert.subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW + timedelta(days=3650))
        .sign(ca_private, hashes.SHA256())
    )
    return ForgedKey("ecdsa-x509", private, _b64(cert.public_bytes(serialization.Encoding.PEM)))


def ca_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_root_signed_by_the_pinned_key_is_trusted_without_first_use() -> None:
    repo = ForgedRepo()
    root_key = repo.role_keys["root"][0]
    for material in (public_pem(root_key), cert_pem(root_key)):
        pin = root_pin("hub-root", material, None)
        loaded = load_pinned(repo.build(), pin)
        assert loaded.root_trust == "pinned"
        assert loaded.facts("latest", None, [])["root_trust"] == "pinned"
        # the facts say which pins: the decision compares them with the pins in force
        assert loaded.facts("latest", None, [])["root_pins"] == [pin.fingerprint]


def test_root_signed_by_another_key_is_refused_naming_gun_and_secret() -> None:
    repo = ForgedRepo()
    other = x509_key()
    with pytest.raises(ThresholdNotMet, match=f"root.json of {GUN} is signed by 0 of the 1 .*hub-root"):
        load_pinned(repo.build(), root_pin("hub-root", public_pem(other), None))


def test_a_bundle_may_hold_several_keys_and_threshold_counts_only_pinned_ones() -> None:
    first, second = x509_key(), x509_key()
    repo = ForgedRepo(role_keys={"root": [first, second]}, thresholds={"root": 2})
    bundle = public_pem(first) + "\n" + cert_pem(second)
    assert len(pem_blocks(bundle)) == 2
    assert load_pinned(repo.build(), root_pin("both", bundle, None)).root_trust == "pinned"
    with pytest.raises(ThresholdNotMet, match="signed by 1 of the 2"):
        load_pinned(repo.build(), root_pin("one", public_pem(first), None))
    # two secrets together make the threshold
    assert (
        load_pinned(
            repo.build(), root_pin("a", public_pem(first), None), root_pin("b", public_pem(second), None)
        ).root_trust
        == "pinned"
    )


def test_a_pinned_ca_must_have_issued_the_root_certificate() -> None:
    ca_private, ca_cert = make_ca()
    repo = ForgedRepo(role_keys={"root": [issued_root_key(ca_private, ca_cert)]})
    assert load_pinned(repo.build(), root_pin("corp-ca", None, ca_pem(ca_cert))).root_trust == "pinned"
    _, other_ca = make_ca("Other CA")
    with pytest.raises(ThresholdNotMet):
        load_pinned(repo.build(), root_pin("other-ca", None, ca_pem(other_ca)))
    # self-signed root certificates (Notary's default) are not issued by the CA
    with pytest.raises(ThresholdNotMet):
        load_pinned(ForgedRepo().build(), root_pin("corp-ca", None, ca_pem(ca_cert)))


def test_a_ca_without_the_ca_flag_authorises_nothing() -> None:
    ca_private, ca_cert = make_ca(is_ca=False)
    repo = ForgedRepo(role_keys={"root": [issued_root_key(ca_private, ca_cert)]})
    with pytest.raises(ThresholdNotMet):
        load_pinned(repo.build(), root_pin("not-a-ca", None, ca_pem(ca_cert)))


def test_unusable_secrets_fail_closed() -> None:
    assert (
        root_pin("empty", "", None).error
        == "secret empty holds neither `publicKeys` nor `caCertificates` PEM blocks"
    )
    assert (
        "cannot be read"
        in root_pin("junk", "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n", None).error
    )
    assert "not a certificate" in root_pin("key-as-ca", None, public_pem(ecdsa_key())).error
    with pytest.raises(CertificateError, match="secret empty"):
        load_pinned(ForgedRepo().build(), root_pin("empty", "", None))


def test_pinned_material_changes_the_fingerprint() -> None:
    a, b = x509_key(), x509_key()
    assert root_pin("s", public_pem(a), None).fingerprint == root_pin("t", public_pem(a), None).fingerprint
    assert root_pin("s", public_pem(a), None).fingerprint != root_pin("s", public_pem(b), None).fingerprint


def test_rotation_between_recorded_roots() -> None:
    old_key, new_key = x509_key(), x509_key()
    old = ForgedRepo(role_keys={"root": [old_key]}).build()["root"]
    rotated = ForgedRepo(
        role_keys={"root": [new_key]}, versions={"root": 2}, signers={"root": [old_key, new_key]}
    ).build()["root"]
    unrelated = ForgedRepo(role_keys={"root": [x509_key()]}, versions={"root": 3}).build()["root"]
    check_rotation(GUN, old, old, NOW)
    check_rotation(GUN, old, rotated, NOW)
    with pytest.raises(RollbackAttack):
        check_rotation(GUN, rotated, old, NOW)  # back to the old root: a rollback
    with pytest.raises(BadRootRotation):
        check_rotation(GUN, old, unrelated, NOW)
