"""Secrets out of URLs, model names and settings before anything is written or shown.

A base URL may carry a credential: ``http://user:KEY@host/v1`` or ``https://host/v1?api-key=KEY``
(Azure), ``?key=KEY`` (Google), ``?sig=...`` (a signed URL). :func:`redact_url` replaces the user
information (``user:password@``, all of it: a bare ``KEY@`` is a key too) and the value of every
secret-looking query or fragment parameter with :data:`REDACTED`; :func:`redact` does so for every URL
inside a text (a model name ``openai:MODEL@URL``, an error message) and :func:`redact_values` for
every string in a nested structure (a configuration dump).

A parameter is secret when its name, lower-cased with ``-`` read as ``_``, contains one of
:data:`SECRET_WORDS` (``key``, ``token``, ``secret``, ``password``, ``passwd``, ``auth``,
``signature``, ``credential``: ``api-key``, ``api_key``, ``access_token``, ``X-Amz-Signature``...) or
is one of :data:`SECRET_NAMES` (``sig``, ``pwd``, ``pass``, ``code``).

The request itself is always sent to the real URL; only what is recorded or shown is redacted, so a
recorded URL that had a secret cannot be used again (:func:`has_redaction` tells).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: What replaces a secret.
REDACTED = "***"
#: A parameter whose normalised name contains one of these is a secret.
SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "auth", "signature", "credential")
#: Parameter names that are secrets as a whole.
SECRET_NAMES = frozenset({"sig", "pwd", "pass", "code"})

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def is_secret_parameter(name: str) -> bool:
    """Whether a query parameter called ``name`` holds a secret (see the module docstring)."""
    normal = name.strip().lower().replace("-", "_")
    return normal in SECRET_NAMES or any(word in normal for word in SECRET_WORDS)


def _redact_pairs(text: str) -> str:
    """``a=1&api_key=K`` -> ``a=1&api_key=***``; text without ``=`` is kept."""
    pieces = []
    for piece in text.split("&"):
        name, sep, value = piece.partition("=")
        pieces.append(f"{name}={REDACTED}" if sep and value and is_secret_parameter(name) else piece)
    return "&".join(pieces)


def url_secrets(url: str) -> list[str]:
    """The secrets in ``url``: its user information (each of user and password) and the values of
    its secret parameters, so that a text quoting them (a server's error message) can be cleaned."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = [parts.username or "", parts.password or ""]
    for text in (parts.query, parts.fragment):
        for piece in text.split("&"):
            name, _, value = piece.partition("=")
            if is_secret_parameter(name):
                found.append(value)
    return [secret for secret in found if secret]


def redact_url(url: str) -> str:
    """``url`` with its user information and secret parameter values replaced by :data:`REDACTED`."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the host: keep nothing after the scheme's host
        return url.split("://", 1)[0] + f"://{REDACTED}" if "://" in url else url
    user, at, host = parts.netloc.rpartition("@")
    netloc = f"{REDACTED}@{host}" if at and user else parts.netloc
    return urlunsplit(
        (parts.scheme, netloc, parts.path, _redact_pairs(parts.query), _redact_pairs(parts.fragment))
    )


def redact(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`redact_url`)."""
    return _URL.sub(lambda match: redact_url(match.group(0)), text)


def redact_values(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists, tuples, strings) with every string redacted (:func:`redact`)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_values(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_values(item) for item in value)
    return value


def has_redaction(text: str | None) -> bool:
    """Whether ``text`` holds a URL from which a secret was removed (it cannot be used as is)."""
    return bool(text) and any(REDACTED in match.group(0) for match in _URL.finditer(text or ""))
