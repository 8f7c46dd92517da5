"""Salted scrypt hashes for passwords; SHA-256 digests for high-entropy secrets (keys, tokens)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_N, _R, _P, _LENGTH = 2**14, 8, 1, 32


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$hash`, with a fresh random salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_LENGTH)
    return "$".join(["scrypt", str(_N), str(_R), str(_P), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str | None) -> bool:
    """True if `password` matches the stored hash (constant-time compare).

    With no stored hash it still spends the time of one hash, so that an
    unknown user cannot be told from a wrong password by timing.
    """
    if not stored:
        hash_password(password)
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def digest_secret(secret: str) -> str:
    """Hex SHA-256 of a random secret (API key, access token): enough for 256-bit secrets."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, expected_digest: str) -> bool:
    return hmac.compare_digest(digest_secret(secret), expected_digest)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
