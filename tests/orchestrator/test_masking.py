"""Known secrets: which values they are, and masking them in whole and streamed text."""

from __future__ import annotations

import pytest

from orchestrator import masking
from orchestrator.config import Settings
from orchestrator.masking import StreamMasker, known_secrets
from orchestrator.profiles import Profile

KEY = "bootstrap-Key-0123456789abcdef"


def test_known_secrets_are_the_service_keys_passwords_and_profile_keys():
    settings = Settings(api_key=KEY,
                        database_url="postgresql+psycopg://orch:Db%2FPass-9@db:5432/orch",
                        broker_url="redis://:Broker-Pass-7@redis:6379/0")
    profiles = {
        "llm": Profile("llm", "openai", {"api_key_env": "LLM_KEY"}),
        "unset": Profile("unset", "openai", {"api_key_env": "UNSET_KEY"}),
        "sh": Profile("sh", "command", {"argv": ["true"]}),
    }
    environ = {"LLM_KEY": "sk-llm-secret", "HOME": "/home/orch", "OTHER": "not-a-secret"}
    found = known_secrets(settings, profiles, environ)
    assert sorted(found) == sorted(
        [KEY, "Db%2FPass-9", "Db/Pass-9", "Broker-Pass-7", "sk-llm-secret"])


def test_no_password_no_key_nothing_known():
    assert known_secrets(Settings(), {}, {}) == []


def test_mask_ignores_case_and_masks_a_secret_cut_at_the_start():
    masking.learn([KEY])
    assert masking.mask(f"a {KEY.upper()} b {KEY.lower()} c") == "a *** b *** c"
    # The tail of a longer text that began inside the key.
    assert masking.mask(KEY[-10:] + " done", cut=True) == "*** done"
    assert masking.mask(KEY[-10:] + " done") == KEY[-10:] + " done"
    assert masking.mask(None) is None and masking.mask("") == ""


def stream(masker: StreamMasker, pieces: list[str]) -> tuple[list[str], str]:
    shown = [masker.feed(p) for p in pieces]
    return shown, "".join(shown) + masker.close()


@pytest.mark.parametrize("split", range(1, 24))
def test_a_secret_split_between_two_pieces_never_shows(split):
    secret = "Split-Secret-Value-123"
    text = "before " + secret.upper() + " after"
    at = len("before ") + split
    shown, whole = stream(StreamMasker([secret]), [text[:at], text[at:]])
    assert whole == "before *** after"
    # What was shown after each piece is a prefix of the masked text, never a key part.
    assert "before *** after".startswith(shown[0])
    assert all(secret[:4].lower() not in piece.lower() for piece in shown)


def test_the_stream_holds_back_only_what_could_begin_a_secret():
    masker = StreamMasker(["abcdef", "0123456789"])
    assert masker.feed("x" * 20) == "x" * 20  # shown at once: no secret starts so
    assert masker.feed("abcdef!" + "y" * 9) == "***!" + "y" * 9
    assert masker.feed("see 0123") == "see "  # "0123" may be the key's beginning
    assert masker.feed("45678 no") == "012345678 no"  # it was not
    assert masker.feed("then ABC") == "then "  # case does not matter
    assert masker.close() == "ABC"


def test_without_secrets_a_stream_passes_through():
    masker = StreamMasker([])
    assert masker.feed("hello") == "hello" and masker.close() == ""
