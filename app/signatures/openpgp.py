"""A strict, small OpenPGP reader for Red Hat simple signing: public keys and signed messages.

Why our own reader on `cryptography` rather than a library: PGPy has had no release since 2022
and breaks on Python 3.13; pysequoia is a binary wheel of a large Rust stack for what is here a few
hundred lines; python-gnupg parses gpg's status output (a history of spoofing bugs in such
wrappers). Simple signing needs one narrow slice of RFC 4880, so Ostiary reads exactly that slice
and refuses everything else (docs/signatures.md, "OpenPGP profile"):

- Public keys: binary or ASCII-armoured blocks of v4 public-key packets. Usable keys are primary
  keys of RSA (algorithm 1 or 3, at least 2048 bits) or EdDSA on Ed25519 (algorithm 22). Other
  packets (user IDs, certifications, subkeys, keys of other algorithms) are skipped and never sign.
  A block with a key revocation signature (class 0x20) makes that key unusable. The key's own
  self-signed expiry is not read: the Secret holding it is the trust anchor.
- Signed messages: binary only; optionally inside one compressed-data packet (uncompressed, ZIP
  or ZLIB, at most MAX_MESSAGE_BYTES after inflation); then exactly one-pass signature (v3) ->
  literal data -> signature (v4, class 0x00 binary document, SHA-256 or SHA-512), with the
  one-pass packet agreeing with the signature. A hashed subpacket with the critical bit of a type
  not listed here, a signature expiry in the past, more or fewer packets, trailing bytes: refused.

Parsing is linear, with no recursion beyond the one compression layer and no regular expression
over the input. Every failure is an OpenPGPError with a reason a person can act on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from app.errors import VerificationError

MAX_KEY_BLOCK_BYTES = 256 * 1024
MAX_KEYS = 32
MAX_MESSAGE_BYTES = 64 * 1024  # a simple signature is a few hundred bytes; inflated size bound too
MIN_RSA_BITS = 2048

_ED25519_OID = bytes.fromhex("2b06010401da470f01")
_HASHES: dict[int, tuple[str, type[hashes.HashAlgorithm]]] = {
    8: ("SHA256", hashes.SHA256),
    10: ("SHA512", hashes.SHA512),
}
_RSA_ALGOS = (1, 3)
_EDDSA = 22
# Hashed subpackets Ostiary understands: creation time, signature expiry, issuer key ID, issuer
# fingerprint. Any other type marked critical is refused (RFC 4880 5.2.3.1).
_KNOWN_SUBPACKETS = frozenset({2, 3, 16, 33})

TAG_SIGNATURE, TAG_ONE_PASS, TAG_PUBLIC_KEY, TAG_COMPRESSED, TAG_LITERAL = 2, 4, 6, 8, 11
TAG_PUBLIC_SUBKEY = 14


class OpenPGPError(VerificationError, ValueError):
    """The input is not in the accepted OpenPGP profile, or a signature did not verify."""


@dataclass(frozen=True)
class PublicKey:
    fingerprint: str  # v4 fingerprint, upper-case hex (as gpg prints it)
    algorithm: str  # "RSA-3072", "Ed25519"
    key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey

    @property
    def key_id(self) -> str:
        return self.fingerprint[-16:]


@dataclass(frozen=True)
class VerifiedMessage:
    payload: bytes  # the literal data
    signer: PublicKey  # the key whose signature verified
    created: int  # signature creation time (seconds since the epoch)
    expires: int | None = None  # when the signature expires (seconds since the epoch), if it does


# ---- packets -----------------------------------------------------------------------------------


def _packets(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(tag, body) of each packet in `data`, old or new format, partial lengths joined; linear."""
    pos, end = 0, len(data)
    while pos < end:
        ctb = data[pos]
        pos += 1
        if not ctb & 0x80:
            raise OpenPGPError(f"byte {pos - 1} is not an OpenPGP packet header")
        if ctb & 0x40:  # new format
            tag = ctb & 0x3F
            body, pos = _new_body(data, pos)
        else:
            tag, length_type = (ctb >> 2) & 0x0F, ctb & 0x03
            if length_type == 3:  # indeterminate: the rest of the input
                body, pos = data[pos:], end
            else:
                size = 1 << length_type
                if pos + size > end:
                    raise OpenPGPError("a packet header is cut short")
                length = int.from_bytes(data[pos : pos + size], "big")
                pos += size
                if pos + length > end:
                    raise OpenPGPError("a packet is longer than the data")
                body, pos = data[pos : pos + length], pos + length
        yield tag, body


def _new_body(data: bytes, pos: int) -> tuple[bytes, int]:
    parts: list[bytes] = []
    end = len(data)
    while True:
        if pos >= end:
            raise OpenPGPError("a packet length is cut short")
        first = data[pos]
        if first < 192:
            length, pos, partial = first, pos + 1, False
        elif first < 224:
            if pos + 2 > end:
                raise OpenPGPError("a packet length is cut short")
            length, pos, partial = ((first - 192) << 8) + data[pos + 1] + 192, pos + 2, False
        elif first == 255:
            if pos + 5 > end:
                raise OpenPGPError("a packet length is cut short")
            length, pos, partial = int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5, False
        else:
            length, pos, partial = 1 << (first & 0x1F), pos + 1, True
        if pos + length > end:
            raise OpenPGPError("a packet is longer than the data")
        parts.append(data[pos : pos + length])
        pos += length
        if not partial:
            return b"".join(parts), pos


class _Reader:
    """Bounded reads from one packet body."""

    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise OpenPGPError(f"{self.what} is cut short")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def mpi(self) -> bytes:
        bits = self.number(2)
        return self.take((bits + 7) // 8)

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk


# ---- keys --------------------------------------------------------------------------------------


def _dearmor(text: bytes) -> bytes:
    """The binary packets of one or more ASCII-armoured blocks, or `text` itself when binary."""
    if len(text) > MAX_KEY_BLOCK_BYTES:
        raise OpenPGPError(f"the key block is larger than {MAX_KEY_BLOCK_BYTES} bytes")
    if not text.lstrip().startswith(b"-----BEGIN PGP"):
        return text
    out = _armour_blocks(text)
    if not out:
        raise OpenPGPError("no armoured public key block found")
    return b"".join(out)


def _armour_blocks(text: bytes) -> list[bytes]:
    """The decoded body of each PUBLIC KEY BLOCK of armoured `text`, in order (armour headers dropped)."""
    out: list[bytes] = []
    body: list[bytes] | None = None
    in_headers = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----"):
            body, in_headers = [], True
        elif line.startswith(b"-----END PGP PUBLIC KEY BLOCK-----"):
            if body is None:
                raise OpenPGPError("an armour END line without its BEGIN line")
            out.append(_armour_body(body))
            body = None
        elif body is not None:
            in_headers = _body_line(body, line, in_headers)
        elif line.startswith(b"-----BEGIN PGP"):
            raise OpenPGPError("only PUBLIC KEY BLOCK armour is accepted for keys")
    if body is not None:
        raise OpenPGPError("an armoured key block has no END line")
    return out


def _body_line(body: list[bytes], line: bytes, in_headers: bool) -> bool:
    """Keep `line` of an armoured block unless it is an armour header (or the blank line that ends
    them); whether armour headers go on after it. A first line without ":" means there are none."""
    if in_headers and line and b":" in line:
        return True
    if not (in_headers and not line):
        body.append(line)
    return False


def _armour_body(lines: list[bytes]) -> bytes:
    data = [ln for ln in lines if ln]
    if data and data[-1].startswith(b"="):  # CRC-24 line (RFC 4880 6.1), checked by the packets
        data = data[:-1]
    try:
        return base64.b64decode(b"".join(data), validate=True)
    except (binascii.Error, ValueError):
        raise OpenPGPError("an armoured key block is not valid base64") from None


def _fingerprint(body: bytes) -> str:
    return (
        hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body, usedforsecurity=False).hexdigest().upper()
    )


def _public_key(body: bytes) -> PublicKey | None:
    """The key of one v4 public-key packet body, or None when outside the profile (not usable)."""
    r = _Reader(body, "a public-key packet")
    if r.byte() != 4:
        return None
    r.take(4)  # creation time
    algo = r.byte()
    try:
        if algo in _RSA_ALGOS:
            n, e = int.from_bytes(r.mpi(), "big"), int.from_bytes(r.mpi(), "big")
            if n.bit_length() < MIN_RSA_BITS:
                return None
            key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey = rsa.RSAPublicNumbers(e, n).public_key()
            name = f"RSA-{n.bit_length()}"
        elif algo == _EDDSA:
            oid = r.take(r.byte())
            point = r.mpi()
            if oid != _ED25519_OID or len(point) != 33 or point[0] != 0x40:
                return None
            key = ed25519.Ed25519PublicKey.from_public_bytes(point[1:])
            name = "Ed25519"
        else:
            return None
    except ValueError:
        return None
    if r.pos != len(body):
        return None
    return PublicKey(_fingerprint(body), name, key)


def read_public_keys(block: bytes) -> list[PublicKey]:
    """The usable primary keys of an (armoured or binary) public key block, in order.

    Raises OpenPGPError when the block cannot be read or holds no usable key."""
    data = _dearmor(block)
    keys: list[PublicKey] = []
    current: PublicKey | None = None
    revoked: set[str] = set()
    for tag, body in _packets(data):
        if tag == TAG_PUBLIC_KEY:
            current = _public_key(body)
            if current is not None:
                if len(keys) >= MAX_KEYS:
                    raise OpenPGPError(f"the key block holds more than {MAX_KEYS} keys")
                keys.append(current)
        elif tag == TAG_PUBLIC_SUBKEY:
            current = None  # signatures after a subkey are about the subkey
        elif (
            tag == TAG_SIGNATURE
            and current is not None
            and len(body) > 1
            and body[0] == 4
            and body[1] == 0x20
        ):
            revoked.add(current.fingerprint)
    usable = [k for k in keys if k.fingerprint not in revoked]
    if not usable:
        raise OpenPGPError("no usable public key (v4 RSA of 2048 bits or more, or Ed25519) in the key block")
    return usable


# ---- signed messages ---------------------------------------------------------------------------


def _inflate(body: bytes) -> bytes:
    if not body:
        raise OpenPGPError("an empty compressed packet")
    algo, rest = body[0], body[1:]
    if algo == 0:
        return rest
    if algo not in (1, 2):
        raise OpenPGPError(f"compression algorithm {algo} is not accepted (only none, ZIP, ZLIB)")
    inflater = zlib.decompressobj(-15 if algo == 1 else 15)
    try:
        out = inflater.decompress(rest, MAX_MESSAGE_BYTES + 1)
    except zlib.error as exc:
        raise OpenPGPError(f"the compressed packet does not inflate: {exc}") from None
    if len(out) > MAX_MESSAGE_BYTES:
        raise OpenPGPError(f"the message inflates to more than {MAX_MESSAGE_BYTES} bytes")
    if not inflater.eof:
        raise OpenPGPError("the compressed packet is cut short")
    if inflater.unused_data:
        raise OpenPGPError("the compressed packet has bytes after its end")
    return out


@dataclass(frozen=True)
class _Signature:
    sig_type: int
    pubkey_algo: int
    hash_algo: int
    hashed: bytes  # version .. end of hashed subpackets (what the hash covers besides the data)
    issuer_fpr: str | None
    issuer_id: str | None
    created: int
    expires_after: int | None
    left16: bytes
    values: tuple[bytes, ...]


def _subpackets(data: bytes) -> Iterator[tuple[int, bool, bytes]]:
    r = _Reader(data, "a signature subpacket")
    while r.pos < len(data):
        first = r.byte()
        if first < 192:
            length = first
        elif first < 255:
            length = ((first - 192) << 8) + r.byte() + 192
        else:
            length = r.number(4)
        if length < 1:
            raise OpenPGPError("an empty signature subpacket")
        kind = r.byte()
        yield kind & 0x7F, bool(kind & 0x80), r.take(length - 1)


def _hashed_fields(area: bytes) -> tuple[str | None, str | None, int | None, int | None]:
    """(issuer fingerprint, issuer key ID, creation time, expiry seconds) of the hashed subpackets."""
    issuer_fpr = issuer_id = None
    created = expires = None
    for kind, critical, value in _subpackets(area):
        if kind not in _KNOWN_SUBPACKETS:
            if critical:
                raise OpenPGPError(f"the signature has a critical subpacket of unknown type {kind}")
            continue
        if kind == 2 and len(value) == 4:
            created = int.from_bytes(value, "big")
        elif kind == 3 and len(value) == 4:
            expires = int.from_bytes(value, "big")
        elif kind == 33 and len(value) == 21 and value[0] == 4:
            issuer_fpr = value[1:].hex().upper()
        elif kind == 16 and len(value) == 8:
            issuer_id = value.hex().upper()
        else:
            raise OpenPGPError(f"signature subpacket {kind} is malformed")
    return issuer_fpr, issuer_id, created, expires


def _signature(body: bytes) -> _Signature:
    r = _Reader(body, "the signature packet")
    if r.byte() != 4:
        raise OpenPGPError("only version 4 signatures are accepted")
    sig_type, pubkey_algo, hash_algo = r.byte(), r.byte(), r.byte()
    hashed_area = r.take(r.number(2))
    hashed = body[: r.pos]
    unhashed_area = r.take(r.number(2))
    left16 = r.take(2)
    if pubkey_algo in _RSA_ALGOS:
        values: tuple[bytes, ...] = (r.mpi(),)
    elif pubkey_algo == _EDDSA:
        values = (r.mpi(), r.mpi())
    else:
        raise OpenPGPError(f"public-key algorithm {pubkey_algo} is not accepted (only RSA and Ed25519)")
    if r.pos != len(body):
        raise OpenPGPError("the signature packet has trailing bytes")
    issuer_fpr, issuer_id, created, expires = _hashed_fields(hashed_area)
    for kind, critical, value in _subpackets(unhashed_area):
        if critical and kind not in _KNOWN_SUBPACKETS:
            raise OpenPGPError(f"the signature has a critical subpacket of unknown type {kind}")
        if kind == 16 and len(value) == 8 and issuer_id is None:
            issuer_id = value.hex().upper()  # a hint only: the key that verifies decides
    if created is None:
        raise OpenPGPError("the signature has no hashed creation time")
    return _Signature(
        sig_type,
        pubkey_algo,
        hash_algo,
        hashed,
        issuer_fpr,
        issuer_id,
        created,
        expires or None,
        left16,
        values,
    )


def _message_packets(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(one-pass body, literal body, signature body) of a signed message, exactly that sequence."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise OpenPGPError(f"the signature is larger than {MAX_MESSAGE_BYTES} bytes")
    packets = list(_limited(_packets(data), 4))
    if len(packets) == 1 and packets[0][0] == TAG_COMPRESSED:
        packets = list(_limited(_packets(_inflate(packets[0][1])), 4))
    tags = [tag for tag, _ in packets]
    if tags != [TAG_ONE_PASS, TAG_LITERAL, TAG_SIGNATURE]:
        raise OpenPGPError(
            f"expected one-pass signature, literal data, signature; found packet tags {tags[:4]}"
        )
    return packets[0][1], packets[1][1], packets[2][1]


def _limited(packets: Iterator[tuple[int, bytes]], most: int) -> Iterator[tuple[int, bytes]]:
    for count, packet in enumerate(packets, 1):
        if count > most:
            raise OpenPGPError(f"more than {most - 1} packets in the message")
        yield packet


def _literal(body: bytes) -> bytes:
    r = _Reader(body, "the literal data packet")
    if r.byte() not in (0x62, 0x74, 0x75):  # b, t, u
        raise OpenPGPError("the literal data packet has an unknown format")
    r.take(r.byte())  # file name
    r.take(4)  # date
    return r.rest()


def _check_one_pass(body: bytes, sig: _Signature) -> None:
    r = _Reader(body, "the one-pass signature packet")
    version, sig_type, hash_algo, pubkey_algo = r.byte(), r.byte(), r.byte(), r.byte()
    key_id = r.take(8).hex().upper()
    nested = r.byte()
    if version != 3 or r.pos != len(body) or nested != 1:
        raise OpenPGPError("the one-pass signature packet is not a single version 3 one")
    if (sig_type, hash_algo, pubkey_algo) != (sig.sig_type, sig.hash_algo, sig.pubkey_algo):
        raise OpenPGPError("the one-pass signature packet does not agree with the signature")
    issuer = sig.issuer_fpr[-16:] if sig.issuer_fpr else sig.issuer_id
    if issuer is not None and key_id != issuer:
        raise OpenPGPError("the one-pass signature packet names another key than the signature")


def _verify_with(key: PublicKey, sig: _Signature, digest: bytes, algorithm: hashes.HashAlgorithm) -> bool:
    try:
        if isinstance(key.key, rsa.RSAPublicKey):
            if sig.pubkey_algo not in _RSA_ALGOS:
                return False
            size = (key.key.key_size + 7) // 8
            value = sig.values[0]
            if len(value) > size:
                return False
            key.key.verify(value.rjust(size, b"\0"), digest, padding.PKCS1v15(), utils.Prehashed(algorithm))
            return True
        if sig.pubkey_algo != _EDDSA or any(len(v) > 32 for v in sig.values):
            return False
        key.key.verify(b"".join(v.rjust(32, b"\0") for v in sig.values), digest)
        return True
    except InvalidSignature:
        return False


def verify_message(message: bytes, keys: Sequence[PublicKey], now: int) -> VerifiedMessage:
    """The literal data of a signed message whose signature verifies with one of `keys` at `now`
    (seconds since the epoch). Raises OpenPGPError saying why not."""
    one_pass, literal, signature = _message_packets(message)
    sig = _signature(signature)
    _check_one_pass(one_pass, sig)
    if sig.sig_type != 0x00:
        raise OpenPGPError(
            f"signature class {sig.sig_type:#04x} is not accepted (only 0x00, a binary document)"
        )
    if sig.hash_algo not in _HASHES:
        raise OpenPGPError(f"hash algorithm {sig.hash_algo} is not accepted (only SHA-256 and SHA-512)")
    if sig.expires_after is not None and sig.created + sig.expires_after <= now:
        raise OpenPGPError("the signature has expired")
    payload = _literal(literal)
    name, algorithm = _HASHES[sig.hash_algo]
    h = hashlib.new(name.lower())
    h.update(payload)
    h.update(sig.hashed)
    h.update(b"\x04\xff" + len(sig.hashed).to_bytes(4, "big"))
    digest = h.digest()
    if digest[:2] != sig.left16:
        raise OpenPGPError("the signature does not match the signed data (hash prefix differs)")
    candidates = [k for k in keys if _issued_by(k, sig)] or list(keys)
    for key in candidates:
        if _verify_with(key, sig, digest, algorithm()):
            expires = sig.created + sig.expires_after if sig.expires_after is not None else None
            return VerifiedMessage(payload, key, sig.created, expires)
    issuer = sig.issuer_fpr or sig.issuer_id or "an unnamed key"
    raise OpenPGPError(f"the signature (by {issuer}) does not verify with any trusted key")


def _issued_by(key: PublicKey, sig: _Signature) -> bool:
    if sig.issuer_fpr is not None:
        return key.fingerprint == sig.issuer_fpr
    return sig.issuer_id is not None and key.key_id == sig.issuer_id


def issuer_of(message: bytes) -> str | None:
    """The issuer a signed message names (fingerprint or key ID), unverified: for messages only."""
    try:
        _, _, signature = _message_packets(message)
        sig = _signature(signature)
    except OpenPGPError:
        return None
    return sig.issuer_fpr or sig.issuer_id
