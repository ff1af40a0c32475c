"""Known secret values, and masking them out of everything the service stores or logs.

`known_secrets` is the one rule for what a secret is; `learn` registers values in this
process, `mask` replaces each one, whatever its case, by `***`, and `StreamMasker` does
the same for text that arrives in pieces (a session's live output).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

MASK = "***"
# Shorter values would mask ordinary words and numbers all over an agent's output.
MIN_SECRET_CHARS = 6
# Where stored text was cut, a leading piece this long of a secret's end is masked too.
MIN_FRAGMENT_CHARS = 4

Text = TypeVar("Text", str, None)
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None


def _url_password(url: str | None) -> list[str]:
    try:
        password = urlsplit(url or "").password
    except ValueError:
        return []
    if not password:
        return []
    return list({password, unquote(password)})


def known_secrets(settings: Any, profiles: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> list[str]:
    """The bootstrap API key, the passwords in DATABASE_URL and BROKER_URL, and the value
    of every variable an agent profile names in `api_key_env`."""
    environ = os.environ if environ is None else environ
    if profiles is None:
        from orchestrator.profiles import ProfileError, load_profiles

        try:
            profiles = load_profiles(settings.agents_file)
        except ProfileError:
            profiles = {}
    found = [settings.api_key] if settings.api_key else []
    found += _url_password(settings.database_url) + _url_password(settings.broker_url)
    for profile in profiles.values():
        name = profile.options.get("api_key_env")
        if isinstance(name, str) and environ.get(name):
            found.append(environ[name])
    return found


def learn(values: Iterable[str | None]) -> None:
    """Mask these values from now on in this process."""
    global _pattern
    new = {v for v in values if v and len(v) >= MIN_SECRET_CHARS} - _known
    if new:
        _known.update(new)
        _pattern = _compile(_known)


def _compile(values: Iterable[str]) -> re.Pattern[str] | None:
    # Longest first, so a secret that contains another is masked whole.
    ordered = sorted(values, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE) if ordered else None


def mask(text: Text, cut: bool = False) -> Text:
    """`text` with every known secret replaced by ***. `cut` says the text is the tail of
    a longer one: a secret cut in two at its start is masked as well."""
    if not text or _pattern is None:
        return text
    text = _pattern.sub(MASK, text)
    if cut:
        text = _mask_cut_start(text)
    return text


def _mask_cut_start(text: str) -> str:
    # The longest fragment any secret leaves, so that one secret's short tail matching
    # the start of another's longer one never leaves the rest of that one shown.
    head = text[: max(map(len, _known))].lower()
    cut = max((size for secret in _known
               for size in range(len(secret) - 1, MIN_FRAGMENT_CHARS - 1, -1)
               if head.startswith(secret[-size:].lower())), default=0)
    return MASK + text[cut:] if cut else text


class StreamMasker:
    """Masks a stream of text given in pieces. What `feed` returns may be shown at once:
    an end that could be the start of a secret is held back until more text arrives, so a
    secret split between two pieces is never shown; `close` returns the rest."""

    def __init__(self, secrets: Iterable[str] | None = None):
        values = set(_known) if secrets is None else {s for s in secrets if s}
        self._pattern = _compile(values)
        self._starts = {v.lower() for v in values}
        self._hold = max(map(len, values), default=1) - 1
        self._pending = ""

    def feed(self, text: str) -> str:
        self._pending += text
        return self._release(len(self._pending) - self._unsure())

    def _unsure(self) -> int:
        """How many characters at the end may be a secret's beginning."""
        tail = self._pending[-self._hold:].lower() if self._hold else ""
        for size in range(len(tail), 0, -1):
            if any(secret.startswith(tail[-size:]) for secret in self._starts):
                return size
        return 0

    def close(self) -> str:
        return self._release(len(self._pending))

    def _release(self, cut: int) -> str:
        pending, cut = self._pending, max(0, cut)
        out, pos = [], 0
        if self._pattern is not None:
            for match in self._pattern.finditer(pending):
                if match.end() > cut:
                    # Not whole before the cut: it waits, with everything after it.
                    cut = min(cut, match.start())
                    break
                out += [pending[pos:match.start()], MASK]
                pos = match.end()
        out.append(pending[pos:cut])
        self._pending = pending[cut:]
        return "".join(out)
