"""Credentials out of text: URL passwords (RTSP cameras carry them) redacted wherever a URL may be shown.

Used at load time (config errors) and at run time (logs, status, the API); it sits at the bottom of the house so every
layer may import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")
_URL_AT_START = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.\-]*://")
_MIN_LITERAL_SECRET = 4


def redact_url(url: str) -> str:
    """Return ``url`` with the password of its userinfo replaced by ``***``.

    ``rtsp://user:pass@host/x`` becomes ``rtsp://user:***@host/x``. The userinfo is taken to end at
    the *last* ``@`` so that unencoded ``@``, ``/``, ``?``, ``#`` or spaces in a password are hidden
    too; the price is that an ``@`` later in the string may hide more than the password (never less).
    Strings without a password come back unchanged.

    Free text (an exception message, a log line) is accepted too: when it does not start with a
    ``scheme://`` URL, every whitespace-delimited ``scheme://...`` token in it is redacted.
    """
    if _URL_AT_START.match(url):
        return _redact_one_url(url)
    return _URL_IN_TEXT.sub(lambda m: _redact_one_url(m.group()), url)


def _redact_one_url(url: str) -> str:
    scheme_end = url.find("://")
    if scheme_end <= 0:
        return url
    authority_start = scheme_end + 3
    rest = url[authority_start:]
    at = rest.rfind("@")
    if at < 0:
        return url
    user, sep, _password = rest[:at].partition(":")
    if not sep:
        return url
    return f"{url[:authority_start]}{user}:***{rest[at:]}"


def url_password(url: str) -> str | None:
    scheme_end = url.find("://")
    if scheme_end <= 0:
        return None
    rest = url[scheme_end + 3 :]
    at = rest.rfind("@")
    if at < 0:
        return None
    _user, sep, password = rest[:at].partition(":")
    return password if sep and password else None


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Redact every URL password in free text, then any known secret still present verbatim.

    The second pass covers what the URL pattern cannot see, e.g. a password with whitespace.
    """
    text = _URL_IN_TEXT.sub(lambda m: _redact_one_url(m.group()), text)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_LITERAL_SECRET:
            text = text.replace(secret, "***")
    return text
