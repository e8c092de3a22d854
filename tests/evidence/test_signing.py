"""evidence.signing: minisign-format keys and signatures, checked against the real binary.

Every key is generated at run time under tmp_path; no key material lives in the repository.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import subprocess
import tracemalloc
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidence.signing import (
    EncryptedKeyError,
    InvalidCommentError,
    KeyExistsError,
    KeyFileError,
    PublicKey,
    SecretKey,
    SignatureError,
    SigningError,
    generate_keypair,
    key_id_hex,
    sign_file,
    signature_path,
    verify_file,
    write_keypair,
)

MINISIGN = shutil.which("minisign")
needs_minisign = pytest.mark.skipif(MINISIGN is None, reason="minisign binary not on PATH; interop tests need it")


@pytest.fixture
def keypair() -> tuple[SecretKey, PublicKey]:
    return generate_keypair()


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    p = tmp_path / "manifest-sha256.txt"
    p.write_bytes(b"0123abcd  data/principals.jsonl\n" * 50)
    return p


def _sig_lines(sig: Path) -> list[str]:
    return sig.read_text(encoding="utf-8").splitlines()


def _rewrite_line(sig: Path, index: int, new: str) -> None:
    lines = _sig_lines(sig)
    lines[index] = new
    sig.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- pure Python


def test_roundtrip_sign_verify(keypair, payload):
    sk, pk = keypair
    sig = sign_file(sk, payload, trusted_comment="run=2026-11-26T03:00:00Z bag=abc 証跡")
    assert sig == signature_path(payload) == payload.with_name(payload.name + ".minisig")
    lines = _sig_lines(sig)
    assert len(lines) == 4
    assert lines[0] == "untrusted comment: signature from shoseki secret key"
    assert lines[2] == "trusted comment: run=2026-11-26T03:00:00Z bag=abc 証跡"
    blob = base64.b64decode(lines[1])
    assert blob[:2] == b"ED" and blob[2:10] == sk.key_id and len(blob) == 74
    assert len(base64.b64decode(lines[3])) == 64
    assert verify_file(pk, payload) == "run=2026-11-26T03:00:00Z bag=abc 証跡"


def test_prehashed_signature_is_over_blake2b_512(keypair, payload):
    sk, pk = keypair
    sig = sign_file(sk, payload, trusted_comment="c")
    blob = base64.b64decode(_sig_lines(sig)[1])
    digest = hashlib.blake2b(payload.read_bytes(), digest_size=64).digest()
    pk._ed25519().verify(blob[10:], digest)  # raises if not


def test_custom_sig_path(keypair, payload, tmp_path):
    sk, pk = keypair
    out = sign_file(sk, payload, trusted_comment="x", sig_path=tmp_path / "elsewhere.sig")
    assert out == tmp_path / "elsewhere.sig" and not signature_path(payload).exists()
    assert verify_file(pk, payload, out) == "x"


def test_tampered_file(keypair, payload):
    sk, pk = keypair
    sign_file(sk, payload, trusted_comment="c")
    with payload.open("ab") as fh:
        fh.write(b"x")
    with pytest.raises(SignatureError, match="does not match") as exc:
        verify_file(pk, payload)
    assert exc.value.path == payload and exc.value.reason == "signature does not match the file"


def test_tampered_trusted_comment(keypair, payload):
    sk, pk = keypair
    sig = sign_file(sk, payload, trusted_comment="status=partial")
    _rewrite_line(sig, 2, "trusted comment: status=complete")
    with pytest.raises(SignatureError, match="trusted comment") as exc:
        verify_file(pk, payload)
    assert "altered" in exc.value.reason


def test_wrong_key_names_both_ids(keypair, payload):
    sk, _ = keypair
    _, other = generate_keypair()
    sign_file(sk, payload, trusted_comment="c")
    with pytest.raises(SignatureError) as exc:
        verify_file(other, payload)
    assert sk.key_id_hex in str(exc.value) and other.key_id_hex in str(exc.value)
    assert exc.value.reason == f"signature was made by key {sk.key_id_hex}, not by {other.key_id_hex}"


def test_same_key_id_different_key_does_not_match(keypair, payload):
    sk, _ = keypair
    impostor, _ = generate_keypair()
    forged = SecretKey(sk.key_id, impostor.seed, impostor.public_bytes)
    sign_file(forged, payload, trusted_comment="c")
    with pytest.raises(SignatureError, match="does not match"):
        verify_file(sk.public_key(), payload)


def test_missing_signature_and_missing_file(keypair, payload):
    _, pk = keypair
    with pytest.raises(SignatureError, match="signature file missing"):
        verify_file(pk, payload)
    sign_file(keypair[0], payload, trusted_comment="c")
    payload.unlink()
    with pytest.raises(SignatureError, match="signed file missing"):
        verify_file(pk, payload)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.write_text("garbage\n"),
        lambda s: _rewrite_line(s, 0, "comment: nope"),
        lambda s: _rewrite_line(s, 1, "!!!not base64!!!"),
        lambda s: _rewrite_line(s, 1, base64.b64encode(b"ED" + bytes(10)).decode()),
        lambda s: _rewrite_line(s, 1, base64.b64encode(b"XX" + bytes(72)).decode()),
        lambda s: _rewrite_line(s, 2, "untrusted comment: x"),
        lambda s: _rewrite_line(s, 3, base64.b64encode(bytes(10)).decode()),
        lambda s: s.write_text("\n".join(_sig_lines(s)[:3]) + "\n"),
    ],
    ids=["garbage", "bad-prefix", "bad-base64", "short-sig", "bad-alg", "no-trusted", "short-global", "three-lines"],
)
def test_malformed_signature_file(keypair, payload, mutate):
    sk, pk = keypair
    sig = sign_file(sk, payload, trusted_comment="c")
    mutate(sig)
    with pytest.raises(SignatureError, match="malformed signature file"):
        verify_file(pk, payload)


def test_crlf_signature_file_still_verifies(keypair, payload):
    sk, pk = keypair
    sig = sign_file(sk, payload, trusted_comment="crlf ok")
    sig.write_bytes(sig.read_bytes().replace(b"\n", b"\r\n"))
    assert verify_file(pk, payload) == "crlf ok"


def test_legacy_signature_verifies(keypair, payload):
    """A legacy "Ed" signature (minisign -S -l) signs the whole file, not its hash."""
    sk, pk = keypair
    priv = Ed25519PrivateKey.from_private_bytes(sk.seed)
    signature = priv.sign(payload.read_bytes())
    comment = b"legacy comment"
    global_sig = priv.sign(signature + comment)
    signature_path(payload).write_text(
        "untrusted comment: legacy\n"
        f"{base64.b64encode(b'Ed' + sk.key_id + signature).decode()}\n"
        f"trusted comment: {comment.decode()}\n"
        f"{base64.b64encode(global_sig).decode()}\n"
    )
    assert verify_file(pk, payload) == "legacy comment"
    payload.write_bytes(b"changed")
    with pytest.raises(SignatureError, match="does not match"):
        verify_file(pk, payload)


@pytest.mark.parametrize("bad", ["two\nlines", "carriage\rreturn", "nul\0byte", "x" * 9000])
def test_trusted_comment_must_be_one_line(keypair, payload, bad):
    sk, _ = keypair
    with pytest.raises(InvalidCommentError) as exc:
        sign_file(sk, payload, trusted_comment=bad)
    assert isinstance(exc.value, SigningError) and isinstance(exc.value, ValueError)
    assert not signature_path(payload).exists()


def test_key_id_hex_is_minisign_little_endian():
    # minisign prints le64_load(keynum) with %016" PRIX64": the bytes appear reversed.
    assert key_id_hex(bytes.fromhex("2b620164acb10fc4")) == "C40FB1AC6401622B"
    assert key_id_hex(bytes.fromhex("0100000000000000")) == "1"  # not zero-padded, as minisign prints it
    # A public key as `minisign -G` wrote it, with the id in its comment.
    pk = PublicKey.from_text(
        "untrusted comment: minisign public key C40FB1AC6401622B\n"
        "RWQrYgFkrLEPxFtVp2yGH3U/2xtDTaCSLYvKood/wVP0XCQsE8ymBpYK\n"
    )
    assert pk.key_id_hex == "C40FB1AC6401622B"
    assert PublicKey.from_text("RWQrYgFkrLEPxFtVp2yGH3U/2xtDTaCSLYvKood/wVP0XCQsE8ymBpYK") == pk
    assert pk.to_text().splitlines()[0] == "untrusted comment: minisign public key C40FB1AC6401622B"
    # minisign does not zero-pad: an id whose top byte is 0x01 prints 15 digits
    assert key_id_hex(bytes.fromhex("2b34f788f4c95b01")) == "15BC9F488F7342B"


def test_secret_key_layout(keypair):
    sk, pk = keypair
    comment, b64 = sk.to_text().splitlines()
    assert comment == "untrusted comment: shoseki signing key"
    raw = base64.b64decode(b64)
    assert len(raw) == 158
    assert raw[0:2] == b"Ed" and raw[2:4] == b"\0\0" and raw[4:6] == b"B2"
    assert raw[6:54] == bytes(48)  # salt, opslimit, memlimit all zero
    assert raw[54:62] == sk.key_id
    assert raw[62:94] == sk.seed and raw[94:126] == pk.public_bytes
    assert raw[126:] == hashlib.blake2b(b"Ed" + sk.key_id + sk.seed + pk.public_bytes, digest_size=32).digest()
    assert SecretKey.from_text(sk.to_text()) == sk
    assert PublicKey.from_text(pk.to_text()) == pk
    assert "seed" not in repr(sk)


def test_write_keypair_modes_and_no_overwrite(tmp_path):
    sec, pub = tmp_path / "keys" / "shoseki.key", tmp_path / "keys" / "shoseki.pub"
    sec.parent.mkdir()
    old_umask = os.umask(0o077)  # the public key must still come out 0644
    try:
        sk, pk = write_keypair(sec, pub, comment="test key")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert SecretKey.load(sec) == sk and sk.comment == "test key"
    assert PublicKey.load(pub) == pk == sk.public_key()
    before = (sec.read_bytes(), pub.read_bytes())
    with pytest.raises(KeyExistsError, match="already exists") as exc:
        write_keypair(sec, pub)
    assert isinstance(exc.value, SigningError) and isinstance(exc.value, FileExistsError)
    assert exc.value.path == sec
    assert (sec.read_bytes(), pub.read_bytes()) == before
    # Only the public key existing also refuses, and writes no secret key.
    sec2 = tmp_path / "keys" / "other.key"
    with pytest.raises(KeyExistsError):
        write_keypair(sec2, pub)
    assert not sec2.exists()


def test_write_keypair_given_key(tmp_path, keypair):
    sk, pk = keypair
    assert write_keypair(tmp_path / "k", tmp_path / "k.pub", sk) == (sk, pk)
    assert SecretKey.load(tmp_path / "k") == sk


def test_corrupt_secret_keys_name_the_file(tmp_path, keypair):
    sk, _ = keypair
    good = sk.to_text()
    comment, raw = good.splitlines()[0], bytearray(base64.b64decode(good.splitlines()[1]))

    cases: dict[str, tuple[str, str]] = {}
    cases["bad-base64"] = (f"{comment}\n@@@notbase64@@@\n", "base64")
    cases["one-line"] = (f"{comment}\n", "two lines")
    short = base64.b64encode(bytes(raw[:100])).decode()
    cases["short"] = (f"{comment}\n{short}\n", "100 bytes")
    flipped = bytearray(raw)
    flipped[-1] ^= 1
    cases["checksum"] = (f"{comment}\n{base64.b64encode(flipped).decode()}\n", "checksum")
    seed_flipped = bytearray(raw)
    seed_flipped[70] ^= 1
    cases["seed"] = (f"{comment}\n{base64.b64encode(seed_flipped).decode()}\n", "checksum")
    bad_alg = bytearray(raw)
    bad_alg[0:2] = b"XX"
    cases["alg"] = (f"{comment}\n{base64.b64encode(bad_alg).decode()}\n", "signature algorithm")
    cases["public-key"] = (keypair[1].to_text(), "expected 158")

    for name, (text, reason) in cases.items():
        path = tmp_path / f"{name}.key"
        path.write_text(text)
        with pytest.raises(KeyFileError, match=reason) as exc:
            SecretKey.load(path)
        assert str(path) in str(exc.value), name
        assert exc.value.path == path and isinstance(exc.value, SigningError)

    with pytest.raises(KeyFileError, match="no such file"):
        SecretKey.load(tmp_path / "absent.key")


def test_zero_checksum_accepted_but_mismatched_public_half_rejected(tmp_path, keypair):
    """`minisign -G -W` leaves the checksum all zero; the seed/public check still catches damage."""
    sk, _ = keypair
    raw = bytearray(base64.b64decode(sk.to_text().splitlines()[1]))
    raw[126:] = bytes(32)
    path = tmp_path / "zero.key"
    path.write_text(f"untrusted comment: x\n{base64.b64encode(raw).decode()}\n")
    assert SecretKey.load(path).seed == sk.seed
    raw[100] ^= 1  # damage the public half
    path.write_text(f"untrusted comment: x\n{base64.b64encode(raw).decode()}\n")
    with pytest.raises(KeyFileError, match="public half does not match"):
        SecretKey.load(path)


def test_corrupt_public_key(tmp_path):
    path = tmp_path / "bad.pub"
    path.write_text("untrusted comment: minisign public key 00\nRWQAAAA=\n")
    with pytest.raises(KeyFileError, match=str(path)):
        PublicKey.load(path)


def test_encrypted_key_rejected_synthetic(tmp_path, keypair):
    sk, _ = keypair
    raw = bytearray(base64.b64decode(sk.to_text().splitlines()[1]))
    raw[2:4] = b"Sc"
    path = tmp_path / "enc.key"
    path.write_text(f"untrusted comment: minisign encrypted secret key\n{base64.b64encode(raw).decode()}\n")
    with pytest.raises(EncryptedKeyError) as exc:
        SecretKey.load(path)
    msg = str(exc.value)
    assert str(path) in msg and "encrypted" in msg and "not supported for unattended signing" in msg
    assert "shoseki keygen" in msg and "minisign -G -W" in msg


def test_large_file_streams(tmp_path, keypair):
    sk, pk = keypair
    big = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with big.open("wb") as fh:
        for _ in range(20):
            fh.write(block)
    del block
    tracemalloc.start()
    try:
        sign_file(sk, big, trusted_comment="big")
        assert verify_file(pk, big) == "big"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * (1 << 20), f"peak Python allocation {peak} bytes: the file was read whole"


# --------------------------------------------------------------------------- real minisign


def _minisign(*args: str | Path, cwd: Path, input: bytes | None = None, timeout: float = 120):
    kwargs = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(
        [MINISIGN, *map(str, args)], cwd=cwd, capture_output=True, timeout=timeout, **kwargs
    )


def _ok(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, f"minisign exited {proc.returncode}:\n{out}"
    return out


@needs_minisign
def test_minisign_verifies_our_signature(tmp_path, payload):
    sk, pk = write_keypair(tmp_path / "sk", tmp_path / "pk")
    comment = "timestamp:1764126000\tbag:2026-11-26 証跡 ok"
    sign_file(sk, payload, trusted_comment=comment)
    out = _ok(_minisign("-V", "-p", tmp_path / "pk", "-m", payload, cwd=tmp_path))
    assert "Signature and comment signature verified" in out
    assert f"Trusted comment: {comment}" in out
    # -H: minisign insists the signature is prehashed, which ours always is.
    _ok(_minisign("-V", "-H", "-p", tmp_path / "pk", "-m", payload, cwd=tmp_path))
    # The inline (-P) form of the public key works too.
    _ok(_minisign("-V", "-P", pk.to_base64(), "-m", payload, cwd=tmp_path))


@needs_minisign
def test_minisign_rejects_our_tampered_signature(tmp_path, payload):
    sk, pk = write_keypair(tmp_path / "sk", tmp_path / "pk")
    sig = sign_file(sk, payload, trusted_comment="status=partial")
    _rewrite_line(sig, 2, "trusted comment: status=complete")
    proc = _minisign("-V", "-p", tmp_path / "pk", "-m", payload, cwd=tmp_path)
    assert proc.returncode == 1 and b"Comment signature verification failed" in proc.stderr
    sign_file(sk, payload, trusted_comment="c")
    payload.write_bytes(b"tampered")
    proc = _minisign("-V", "-p", tmp_path / "pk", "-m", payload, cwd=tmp_path)
    assert proc.returncode == 1 and b"Signature verification failed" in proc.stderr
    _, other = write_keypair(tmp_path / "sk2", tmp_path / "pk2")
    proc = _minisign("-V", "-p", tmp_path / "pk2", "-m", payload, cwd=tmp_path)
    assert proc.returncode == 1 and sk.key_id_hex.encode() in proc.stderr and other.key_id_hex.encode() in proc.stderr


@needs_minisign
def test_minisign_signs_with_our_key(tmp_path, payload):
    """Our unencrypted key needs no password: minisign -S reads nothing from stdin."""
    sk, pk = write_keypair(tmp_path / "sk", tmp_path / "pk")
    _ok(_minisign("-S", "-s", tmp_path / "sk", "-m", payload, "-t", "signed by minisign", cwd=tmp_path))
    assert verify_file(pk, payload) == "signed by minisign"
    assert base64.b64decode(_sig_lines(signature_path(payload))[1])[:2] == b"ED"
    # With -p minisign also checks the signature against our public key before writing it.
    _ok(_minisign("-S", "-s", tmp_path / "sk", "-p", tmp_path / "pk", "-m", payload, "-t", "again", cwd=tmp_path))
    assert verify_file(pk, payload) == "again"
    # Legacy (-l) signatures over the whole file verify as well.
    legacy = tmp_path / "legacy.minisig"
    _ok(_minisign("-S", "-l", "-s", tmp_path / "sk", "-m", payload, "-x", legacy, "-t", "legacy", cwd=tmp_path))
    assert base64.b64decode(_sig_lines(legacy)[1])[:2] == b"Ed"
    assert verify_file(pk, payload, legacy) == "legacy"
    # minisign -R recreates exactly our public key file from our secret key.
    _ok(_minisign("-R", "-s", tmp_path / "sk", "-p", tmp_path / "pk.recreated", cwd=tmp_path))
    assert (tmp_path / "pk.recreated").read_text() == (tmp_path / "pk").read_text()


@needs_minisign
def test_we_sign_with_minisign_unencrypted_key(tmp_path, payload):
    _ok(_minisign("-G", "-W", "-p", tmp_path / "pub", "-s", tmp_path / "sec", cwd=tmp_path))
    sk = SecretKey.load(tmp_path / "sec")
    pk = PublicKey.load(tmp_path / "pub")
    assert sk.public_key() == pk
    assert f"minisign public key {pk.key_id_hex}" in (tmp_path / "pub").read_text()
    sign_file(sk, payload, trusted_comment="signed by shoseki with a minisign key")
    out = _ok(_minisign("-V", "-p", tmp_path / "pub", "-m", payload, cwd=tmp_path))
    assert "Trusted comment: signed by shoseki with a minisign key" in out
    assert verify_file(pk, payload) == "signed by shoseki with a minisign key"


@pytest.fixture(scope="module")
def minisign_encrypted_key(tmp_path_factory) -> tuple[Path, Path]:
    """An encrypted key from `minisign -G`, the password fed on stdin (scrypt: ~1 GiB, a few s)."""
    if MINISIGN is None:
        pytest.skip("minisign binary not on PATH; interop tests need it")
    d = tmp_path_factory.mktemp("encrypted")
    try:
        proc = _minisign("-G", "-p", d / "pub", "-s", d / "sec", cwd=d, input=b"pw\npw\n", timeout=180)
    except subprocess.TimeoutExpired:
        pytest.skip("minisign -G did not finish (it may insist on a tty for the password)")
    if proc.returncode != 0 or not (d / "sec").exists():
        pytest.skip(f"minisign -G would not take a password on stdin: {proc.stderr.decode(errors='replace').strip()}")
    return d / "sec", d / "pub"


@needs_minisign
def test_minisign_encrypted_key_rejected(minisign_encrypted_key):
    sec, _ = minisign_encrypted_key
    with pytest.raises(EncryptedKeyError) as exc:
        SecretKey.load(sec)
    msg = str(exc.value)
    assert str(sec) in msg and "not supported for unattended signing" in msg
    assert "shoseki keygen" in msg and "minisign -G -W" in msg and "minisign -C -W" in msg


@needs_minisign
def test_minisign_decrypted_key_loads(minisign_encrypted_key, tmp_path, payload):
    """The fix the error message suggests (`minisign -C -W`) yields a key we can use.

    Unlike `-G -W`, such a key carries a real checksum and keeps the old scrypt salt/limits.
    """
    sec, pub = minisign_encrypted_key
    plain = tmp_path / "plain.key"
    shutil.copy(sec, plain)
    _ok(_minisign("-C", "-W", "-s", plain, cwd=tmp_path, input=b"pw\n", timeout=180))
    sk = SecretKey.load(plain)
    assert sk.public_key() == PublicKey.load(pub)
    sign_file(sk, payload, trusted_comment="after -C -W")
    assert "Trusted comment: after -C -W" in _ok(_minisign("-V", "-p", pub, "-m", payload, cwd=tmp_path))
