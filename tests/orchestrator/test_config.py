"""Settings from the environment: a bad value is refused by name, before anything runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.config import Settings


def test_defaults_and_good_values():
    s = Settings.from_env({})
    assert (s.lease_seconds, s.poll_seconds, s.chain_steps, s.output_max_chars) == (
        30.0, 0.25, 20, 65536)
    s = Settings.from_env({"CHAIN_STEPS": "0", "DB_RETRY_SECONDS": "0", "SWEEP_SECONDS": "0.5",
                           "OUTPUT_MAX_CHARS": " 100 ", "STEP_LEASE_SECONDS": "3"})
    assert (s.chain_steps, s.db_retry_seconds, s.sweep_seconds, s.output_max_chars,
            s.lease_seconds) == (0, 0.0, 0.5, 100, 3.0)


@pytest.mark.parametrize(("name", "raw", "says"), [
    ("SWEEP_SECONDS", "0", "more than 0"),
    ("SWEEP_SECONDS", "-5", "more than 0"),
    ("STEP_LEASE_SECONDS", "nan", "must be a number"),
    ("REQUEUE_AFTER_SECONDS", "inf", "must be a number"),
    ("RATE_LIMIT_WINDOW_SECONDS", "soon", "must be a number"),
    ("IDEMPOTENCY_TTL_SECONDS", "0", "more than 0"),
    ("DB_RETRY_SECONDS", "-1", "0 or more"),
    ("OUTPUT_MAX_CHARS", "0", "more than 0"),
    ("OUTPUT_MAX_CHARS", "2.5", "whole number"),
    ("MAX_BODY_BYTES", "1e6", "whole number"),
    ("DB_POOL_SIZE", "-2", "whole number"),
    ("CHAIN_STEPS", "٣", "whole number"),  # a digit, but not an ASCII one
])
def test_bad_values_are_refused_by_name(name, raw, says):
    with pytest.raises(ValueError) as caught:
        Settings.from_env({name: raw})
    assert name in str(caught.value) and says in str(caught.value)


def test_polling_slower_than_lease_renewal_is_refused():
    with pytest.raises(ValueError, match="STEP_POLL_SECONDS .* a third of STEP_LEASE_SECONDS"):
        Settings.from_env({"STEP_LEASE_SECONDS": "3", "STEP_POLL_SECONDS": "1"})
    assert Settings.from_env({"STEP_LEASE_SECONDS": "3", "STEP_POLL_SECONDS": "0.9"})


@pytest.mark.parametrize(("name", "raw", "says"), [
    ("SWEEP_SECONDS", "0", "SWEEP_SECONDS must be more than 0, got '0'"),
    ("LOG_LEVEL", "loud",
     "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'"),
])
def test_cli_names_the_bad_setting_and_does_nothing(tmp_path, name, raw, says):
    target = tmp_path / "never.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{target}", name: raw}
    done = subprocess.run([sys.executable, "-m", "cli", "db", "upgrade"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == f"Error: {says}"
    assert not target.exists()
