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
    ("PORT", "abc", "PORT must be a port number (1-65535), got 'abc'"),
    ("PORT", "70000", "PORT must be a port number (1-65535), got '70000'"),
])
def test_cli_names_the_bad_setting_and_does_nothing(tmp_path, name, raw, says):
    target = tmp_path / "never.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{target}", name: raw}
    done = subprocess.run([sys.executable, "-m", "cli", "db", "upgrade"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == f"Error: {says}"
    assert not target.exists()


def test_port_and_log_level_are_settings():
    assert (Settings.from_env({}).port, Settings.from_env({}).log_level) == (3000, "INFO")
    s = Settings.from_env({"PORT": "8080", "LOG_LEVEL": "warning"})
    assert (s.port, s.log_level) == (8080, "WARNING")


def test_create_app_refuses_a_config_key_that_is_no_setting(settings):
    from api import create_app

    with pytest.raises(ValueError, match=r"unknown config key\(s\) databse_url; known: "):
        create_app({"databse_url": settings.database_url})
    assert create_app({"database_url": settings.database_url}).config["SETTINGS"].database_url \
        == settings.database_url


def test_the_api_process_has_one_celery_app(tmp_path):
    """create_app's Celery app is the process's only one: the tasks and the dispatcher
    bind to it, rather than to a second app made from the environment at import."""
    probe = (
        "from api import create_app\n"
        "app = create_app()\n"
        "import worker.tasks, worker.dispatch, worker.app\n"
        "from celery import current_app\n"
        "from celery._state import _get_active_apps\n"
        "apps = list(_get_active_apps())\n"
        "assert apps == [app.extensions['celery']], apps\n"
        "assert worker.tasks.run_step.app is app.extensions['celery']\n"
        "print('one')\n"
    )
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == "one", done.stderr[-2000:]
