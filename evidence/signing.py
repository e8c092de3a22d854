"""Detached Ed25519 signatures in the minisign formats, in pure Python.

A sealed evidence bag is signed with a key pair the daemon holds on disk. The files are the
ones the ``minisign`` tool (0.11) reads and writes, so an auditor can check a bag with nothing
but ``minisign -V -p shoseki.pub -m manifest.json``, and a key made by ``minisign -G -W`` can
be used here.

Formats (every binary blob is standard base64 on one line, each file is two or four lines)::

    public key   untrusted comment: minisign public key <KEYID>
                 "Ed" | key_id(8) | ed25519 public key(32)

    secret key   untrusted comment: <comment>
                 "Ed" | kdf_alg(2) | "B2" | kdf_salt(32) | opslimit(8 LE) | memlimit(8 LE)
                      | key_id(8) | seed(32) + public key(32) | checksum(32)
                 checksum = blake2b-256("Ed" | key_id | seed + public key)

    signature    untrusted comment: signature from shoseki secret key
                 "ED" | key_id(8) | ed25519_sign(blake2b-512(file))         (prehashed)
                 trusted comment: <one line>
                 ed25519_sign(signature(64) | trusted comment bytes)       ("global" signature)

``<KEYID>`` is the key id read as a little-endian 64-bit integer and printed as 16 upper-case
hex digits, exactly as minisign prints it (so the bytes appear reversed).

Secret keys are written **unencrypted** (kdf_alg ``00 00``): the daemon signs unattended and
has nobody to type a password. A password-protected key (kdf_alg ``"Sc"``, scrypt) is refused
with :class:`EncryptedKeyError`. minisign's own ``-G -W`` keys carry an all-zero checksum (it
only computes the checksum while encrypting); such keys are accepted, and for every key the
public half is re-derived from the seed and compared, so a damaged key never signs.

Verification accepts prehashed (``"ED"``, minisign >= 0.8 default) and legacy (``"Ed"``,
``minisign -S -l``, whole file signed) signatures. Signing always writes the prehashed form and
streams the file through BLAKE2b, so any size can be signed in constant memory.

Exceptions (all carry the fields a message needs)::

    SigningError                   anything this module raises on purpose
     ├── KeyFileError              a key file is unreadable or corrupt (``path``, ``reason``)
     │    └── EncryptedKeyError    the secret key is password-protected (``path``)
     ├── KeyExistsError            refusing to overwrite a key file (``path``); also a FileExistsError
     ├── InvalidCommentError       a comment is not one printable line (``reason``); also a ValueError
     └── SignatureError            a signature does not verify (``path``, ``reason``, ``sig_path``)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "DEFAULT_KEY_COMMENT",
    "SIGNATURE_COMMENT",
    "EncryptedKeyError",
    "InvalidCommentError",
    "KeyExistsError",
    "KeyFileError",
    "PublicKey",
    "SecretKey",
    "SignatureError",
    "SigningError",
    "generate_keypair",
    "key_id_hex",
    "sign_file",
    "signature_path",
    "verify_file",
    "write_keypair",
]

DEFAULT_KEY_COMMENT = "shoseki signing key"
SIGNATURE_COMMENT = "signature from shoseki secret key"
SIG_SUFFIX = ".minisig"

_SIGALG = b"Ed"  # key algorithm; also the legacy (whole message) signature algorithm
_SIGALG_HASHED = b"ED"  # prehashed signature: ed25519(blake2b-512(message))
_KDF_NONE = b"\x00\x00"
_KDF_SCRYPT = b"Sc"
_CHKALG = b"B2"
_COMMENT_PREFIX = b"untrusted comment: "
_TRUSTED_PREFIX = b"trusted comment: "

_KEY_ID_LEN = 8
_SEED_LEN = 32
_PK_LEN = 32
_SIG_LEN = 64
_CHK_LEN = 32
_SALT_LEN = 32
_SECKEY_LEN = 2 + 2 + 2 + _SALT_LEN + 8 + 8 + _KEY_ID_LEN + _SEED_LEN + _PK_LEN + _CHK_LEN  # 158
_PUBKEY_LEN = 2 + _KEY_ID_LEN + _PK_LEN  # 42
_SIGSTRUCT_LEN = 2 + _KEY_ID_LEN + _SIG_LEN  # 74

# minisign reads the trusted-comment line with fgets() into 8192 bytes, prefix and newline
# included, and refuses to sign a comment of 8192 - sizeof "trusted comment: " bytes or more.
TRUSTED_COMMENT_MAX_BYTES = 8192 - len(_TRUSTED_PREFIX) - 2  # 8173
# minisign reads an untrusted comment line into 1024 bytes, prefix and newline included.
UNTRUSTED_COMMENT_MAX_BYTES = 1024 - len(_COMMENT_PREFIX) - 2  # 1003

_CHUNK = 1 << 20


# --------------------------------------------------------------------------- exceptions


class SigningError(Exception):
    """Base of everything this module raises on purpose."""


class KeyFileError(SigningError):
    """A key file (or key text) could not be read or is corrupt."""

    def __init__(self, path: str | os.PathLike[str] | None, reason: str, *, kind: str = "key"):
        self.path = Path(path) if path is not None else None
        self.reason = reason
        self.kind = kind
        where = f"{kind} file {self.path}" if self.path is not None else kind
        super().__init__(f"{where}: {reason}")


class EncryptedKeyError(KeyFileError):
    """The secret key is protected by a password; unattended signing needs an unencrypted key."""

    def __init__(self, path: str | os.PathLike[str] | None):
        fix_existing = (
            f"`minisign -C -W -s {path}` (asks for the current password)" if path is not None
            else "`minisign -C -W -s <file>`"
        )
        super().__init__(
            path,
            "the key is encrypted with a password (minisign kdf 'Sc'); encrypted keys are not "
            "supported for unattended signing. Create an unencrypted key with `shoseki keygen` "
            f"or `minisign -G -W`, or remove the password from this one with {fix_existing}",
            kind="secret key",
        )


class KeyExistsError(SigningError, FileExistsError):
    """Refusing to overwrite an existing key file."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        msg = f"{self.path} already exists; refusing to overwrite a key file (move it away first)"
        SigningError.__init__(self, msg)
        self.filename = str(self.path)

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidCommentError(SigningError, ValueError):
    """A comment that cannot be written as one line of a minisign file."""

    def __init__(self, comment: str, reason: str):
        self.comment = comment
        self.reason = reason
        super().__init__(f"invalid comment {comment[:60]!r}: {reason}")


class SignatureError(SigningError):
    """The signature of ``path`` does not verify; ``reason`` says why."""

    def __init__(self, path: str | os.PathLike[str], reason: str, *, sig_path: str | os.PathLike[str] | None = None):
        self.path = Path(path)
        self.reason = reason
        self.sig_path = Path(sig_path) if sig_path is not None else None
        super().__init__(f"{self.path}: {reason}")


# --------------------------------------------------------------------------- keys


def key_id_hex(key_id: bytes) -> str:
    """A key id as minisign prints it: the little-endian u64 in upper-case hex, not zero-padded

    (minisign formats it with ``%" PRIX64 "``, so an id whose top nibble is 0 has 15 digits)."""
    return f"{int.from_bytes(key_id, 'little'):X}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(line: str | bytes) -> bytes:
    """Strict standard base64 (padding required, no stray characters)."""
    return base64.b64decode(line, validate=True)


def _check_comment(comment: str, max_bytes: int) -> bytes:
    for bad, name in (("\n", "a newline"), ("\r", "a carriage return"), ("\0", "a NUL byte")):
        if bad in comment:
            raise InvalidCommentError(comment, f"must be one line; it contains {name}")
    try:
        raw = comment.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidCommentError(comment, f"not encodable as UTF-8 ({exc.reason})") from None
    if len(raw) > max_bytes:
        raise InvalidCommentError(comment, f"{len(raw)} bytes long; minisign reads at most {max_bytes}")
    return raw


def _read_text(path: str | os.PathLike[str], kind: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(path, "no such file", kind=kind) from None
    except UnicodeDecodeError:
        raise KeyFileError(path, "not a text file (not UTF-8)", kind=kind) from None
    except OSError as exc:
        raise KeyFileError(path, f"cannot read: {exc.strerror or exc}", kind=kind) from None


def _key_lines(text: str, path: str | os.PathLike[str] | None, kind: str) -> tuple[str, str]:
    """(comment, base64 line) of a two-line key file; CRLF tolerated, trailing lines ignored."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if len(lines) < 2 or not lines[1].strip():
        raise KeyFileError(path, "expected two lines (untrusted comment, base64 key)", kind=kind)
    if not lines[0].startswith(_COMMENT_PREFIX.decode()):
        raise KeyFileError(path, "first line does not start with 'untrusted comment: '", kind=kind)
    return lines[0][len(_COMMENT_PREFIX):], lines[1].strip()


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An Ed25519 public key with its minisign key id."""

    key_id: bytes
    public_bytes: bytes

    def __post_init__(self) -> None:
        if len(self.key_id) != _KEY_ID_LEN:
            raise ValueError(f"key_id must be {_KEY_ID_LEN} bytes, not {len(self.key_id)}")
        if len(self.public_bytes) != _PK_LEN:
            raise ValueError(f"public_bytes must be {_PK_LEN} bytes, not {len(self.public_bytes)}")

    @property
    def key_id_hex(self) -> str:
        return key_id_hex(self.key_id)

    def to_base64(self) -> str:
        """The one-line form ``minisign -P`` takes."""
        return _b64(_SIGALG + self.key_id + self.public_bytes)

    def to_text(self) -> str:
        return f"untrusted comment: minisign public key {self.key_id_hex}\n{self.to_base64()}\n"

    @classmethod
    def from_text(cls, text: str, *, source: str | os.PathLike[str] | None = None) -> "PublicKey":
        """Parse a public key file's text, or the bare base64 line (``minisign -P`` form)."""
        kind = "public key"
        stripped = text.strip()
        if stripped and "\n" not in stripped and not stripped.startswith(_COMMENT_PREFIX.decode()):
            b64 = stripped
        else:
            _, b64 = _key_lines(text, source, kind)
        try:
            raw = _unb64(b64)
        except (binascii.Error, ValueError):
            raise KeyFileError(source, "the key line is not valid base64", kind=kind) from None
        if len(raw) != _PUBKEY_LEN:
            raise KeyFileError(source, f"decoded key is {len(raw)} bytes, expected {_PUBKEY_LEN}", kind=kind)
        if raw[:2] != _SIGALG:
            raise KeyFileError(source, f"unsupported signature algorithm {raw[:2]!r} (expected b'Ed')", kind=kind)
        return cls(key_id=raw[2:10], public_bytes=raw[10:])

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "PublicKey":
        return cls.from_text(_read_text(path, "public key"), source=path)

    def _ed25519(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_bytes)


@dataclass(frozen=True, slots=True)
class SecretKey:
    """An unencrypted Ed25519 secret key (seed and public half) with its minisign key id."""

    key_id: bytes
    seed: bytes = field(repr=False)
    public_bytes: bytes
    comment: str = DEFAULT_KEY_COMMENT

    def __post_init__(self) -> None:
        if len(self.key_id) != _KEY_ID_LEN:
            raise ValueError(f"key_id must be {_KEY_ID_LEN} bytes, not {len(self.key_id)}")
        if len(self.seed) != _SEED_LEN:
            raise ValueError(f"seed must be {_SEED_LEN} bytes")
        if len(self.public_bytes) != _PK_LEN:
            raise ValueError(f"public_bytes must be {_PK_LEN} bytes, not {len(self.public_bytes)}")

    @property
    def key_id_hex(self) -> str:
        return key_id_hex(self.key_id)

    def public_key(self) -> PublicKey:
        return PublicKey(self.key_id, self.public_bytes)

    def _checksum(self) -> bytes:
        return hashlib.blake2b(_SIGALG + self.key_id + self.seed + self.public_bytes, digest_size=_CHK_LEN).digest()

    def to_text(self) -> str:
        """The ``minisign -G -W`` layout: kdf none, zero salt and limits, real checksum."""
        _check_comment(self.comment, UNTRUSTED_COMMENT_MAX_BYTES)
        raw = (
            _SIGALG + _KDF_NONE + _CHKALG + bytes(_SALT_LEN) + bytes(8) + bytes(8)
            + self.key_id + self.seed + self.public_bytes + self._checksum()
        )
        assert len(raw) == _SECKEY_LEN
        return f"untrusted comment: {self.comment}\n{_b64(raw)}\n"

    @classmethod
    def from_text(cls, text: str, *, source: str | os.PathLike[str] | None = None) -> "SecretKey":
        kind = "secret key"
        comment, b64 = _key_lines(text, source, kind)
        try:
            raw = _unb64(b64)
        except (binascii.Error, ValueError):
            raise KeyFileError(source, "the key line is not valid base64", kind=kind) from None
        if len(raw) != _SECKEY_LEN:
            raise KeyFileError(source, f"decoded key is {len(raw)} bytes, expected {_SECKEY_LEN}", kind=kind)
        sig_alg, kdf_alg, chk_alg = raw[0:2], raw[2:4], raw[4:6]
        if sig_alg != _SIGALG:
            raise KeyFileError(source, f"unsupported signature algorithm {sig_alg!r} (expected b'Ed')", kind=kind)
        if chk_alg != _CHKALG:
            raise KeyFileError(source, f"unsupported checksum algorithm {chk_alg!r} (expected b'B2')", kind=kind)
        if kdf_alg == _KDF_SCRYPT:
            raise EncryptedKeyError(source)
        if kdf_alg != _KDF_NONE:
            raise KeyFileError(source, f"unsupported key derivation {kdf_alg!r}", kind=kind)
        # kdf_salt / opslimit / memlimit (raw[6:54]) are ignored when the key is not encrypted:
        # `minisign -C -W` leaves the old values in place.
        key_id = raw[54:62]
        seed = raw[62:94]
        public = raw[94:126]
        checksum = raw[126:158]
        key = cls(key_id=key_id, seed=seed, public_bytes=public, comment=comment)
        # `minisign -G -W` never fills the checksum in (it is computed only while encrypting).
        if checksum != bytes(_CHK_LEN) and not hmac.compare_digest(checksum, key._checksum()):
            raise KeyFileError(source, "checksum mismatch: the key is corrupt", kind=kind)
        derived = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
        if not hmac.compare_digest(derived, public):
            raise KeyFileError(source, "the public half does not match the secret seed: the key is corrupt", kind=kind)
        return key

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "SecretKey":
        return cls.from_text(_read_text(path, "secret key"), source=path)

    def _ed25519(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)


def generate_keypair(comment: str = DEFAULT_KEY_COMMENT) -> tuple[SecretKey, PublicKey]:
    """A fresh Ed25519 key pair with a random 8-byte key id."""
    _check_comment(comment, UNTRUSTED_COMMENT_MAX_BYTES)
    private = Ed25519PrivateKey.generate()
    secret = SecretKey(
        key_id=secrets.token_bytes(_KEY_ID_LEN),
        seed=private.private_bytes_raw(),
        public_bytes=private.public_key().public_bytes_raw(),
        comment=comment,
    )
    return secret, secret.public_key()


def _write_new(path: Path, data: str, mode: int) -> None:
    """Create ``path`` (never overwrite), write ``data``, fsync, and set ``mode`` exactly."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyExistsError(path) from None
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed (or, for 0644, widened) the mode
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fd = -1
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        if fd != -1:
            os.close(fd)
        path.unlink(missing_ok=True)
        raise


def write_keypair(
    secret_path: str | os.PathLike[str],
    public_path: str | os.PathLike[str],
    secret_key: SecretKey | None = None,
    *,
    comment: str = DEFAULT_KEY_COMMENT,
) -> tuple[SecretKey, PublicKey]:
    """Write a key pair (a new one unless ``secret_key`` is given) and return it.

    The secret key file is created 0600, the public key 0644; neither may exist already
    (:class:`KeyExistsError`, nothing is written). If the public key cannot be written the
    secret key just created is removed again.
    """
    secret_path, public_path = Path(secret_path), Path(public_path)
    if secret_path.resolve() == public_path.resolve():
        raise SigningError(f"secret and public key paths are the same file: {secret_path}")
    for p in (secret_path, public_path):
        if os.path.lexists(p):
            raise KeyExistsError(p)
    if secret_key is None:
        secret_key, _ = generate_keypair(comment)
    public_key = secret_key.public_key()
    _write_new(secret_path, secret_key.to_text(), 0o600)
    try:
        _write_new(public_path, public_key.to_text(), 0o644)
    except BaseException:
        secret_path.unlink(missing_ok=True)
        raise
    return secret_key, public_key


# --------------------------------------------------------------------------- signatures


def signature_path(path: str | os.PathLike[str]) -> Path:
    """Where minisign looks for the signature of ``path``: ``<path>.minisig``."""
    p = Path(path)
    return p.with_name(p.name + SIG_SUFFIX)


def _blake2b_file(path: Path) -> bytes:
    h = hashlib.blake2b(digest_size=64)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.digest()


def sign_file(
    secret_key: SecretKey,
    path: str | os.PathLike[str],
    *,
    trusted_comment: str,
    sig_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Sign ``path`` (prehashed, as ``minisign -S`` does) and write ``<path>.minisig``.

    The file is streamed through BLAKE2b-512, so its size does not matter. The signature file
    is written to a temporary name and renamed into place. Returns the signature path.
    """
    path = Path(path)
    comment_bytes = _check_comment(trusted_comment, TRUSTED_COMMENT_MAX_BYTES)
    out = Path(sig_path) if sig_path is not None else signature_path(path)
    private = secret_key._ed25519()
    if private.public_key().public_bytes_raw() != secret_key.public_bytes:
        raise SigningError(f"secret key {secret_key.key_id_hex}: public half does not match the seed")
    digest = _blake2b_file(path)
    signature = private.sign(digest)
    global_sig = private.sign(signature + comment_bytes)
    text = (
        f"untrusted comment: {SIGNATURE_COMMENT}\n"
        f"{_b64(_SIGALG_HASHED + secret_key.key_id + signature)}\n"
        f"trusted comment: {trusted_comment}\n"
        f"{_b64(global_sig)}\n"
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def verify_file(
    public_key: PublicKey,
    path: str | os.PathLike[str],
    sig_path: str | os.PathLike[str] | None = None,
) -> str:
    """Check ``path`` against its signature (default ``<path>.minisig``); return the trusted comment.

    Raises :class:`SignatureError` with a reason when the signature file is missing or
    malformed, was made by another key, does not match the file, or its trusted comment was
    altered.
    """
    path = Path(path)
    sig = Path(sig_path) if sig_path is not None else signature_path(path)

    def fail(reason: str) -> SignatureError:
        return SignatureError(path, reason, sig_path=sig)

    try:
        data = sig.read_bytes()
    except FileNotFoundError:
        raise fail(f"signature file missing ({sig})") from None
    except OSError as exc:
        raise fail(f"cannot read signature file {sig}: {exc.strerror or exc}") from None

    lines = [line.rstrip(b"\r") for line in data.split(b"\n")]
    if len(lines) < 4:
        raise fail("malformed signature file: expected four lines")
    if not lines[0].startswith(_COMMENT_PREFIX):
        raise fail("malformed signature file: first line does not start with 'untrusted comment: '")
    if not lines[2].startswith(_TRUSTED_PREFIX):
        raise fail("malformed signature file: third line does not start with 'trusted comment: '")
    comment_bytes = lines[2][len(_TRUSTED_PREFIX):]
    try:
        sig_struct = _unb64(lines[1].strip())
        global_sig = _unb64(lines[3].strip())
    except (binascii.Error, ValueError):
        raise fail("malformed signature file: a signature line is not valid base64") from None
    if len(sig_struct) != _SIGSTRUCT_LEN or len(global_sig) != _SIG_LEN:
        raise fail("malformed signature file: a signature has the wrong length")
    alg, key_id, signature = sig_struct[:2], sig_struct[2:10], sig_struct[10:]
    if alg not in (_SIGALG, _SIGALG_HASHED):
        raise fail(f"malformed signature file: unsupported signature algorithm {alg!r}")
    if key_id != public_key.key_id:
        raise fail(f"signature was made by key {key_id_hex(key_id)}, not by {public_key.key_id_hex}")

    try:
        message = _blake2b_file(path) if alg == _SIGALG_HASHED else path.read_bytes()
    except FileNotFoundError:
        raise fail("signed file missing") from None
    except OSError as exc:
        raise fail(f"cannot read signed file: {exc.strerror or exc}") from None

    pk = public_key._ed25519()
    try:
        pk.verify(signature, message)
    except InvalidSignature:
        raise fail("signature does not match the file") from None
    try:
        pk.verify(global_sig, signature + comment_bytes)
    except InvalidSignature:
        raise fail("trusted comment was altered (comment signature does not verify)") from None
    try:
        return comment_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise fail("trusted comment is signed but is not valid UTF-8") from None
