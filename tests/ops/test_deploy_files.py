"""docker-compose.yml, the Procfile and the Dockerfile run commands the CLI really has."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import click
import pytest
import yaml

from cli.main import main

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = {"migrate", "api", "worker", "beat", "flower"}


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose/sh-style variables: ${X:-default}, ${X:?error}, ${X}, $X and $$."""
    env = env or {}

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1) or m.group(4), m.group(2), m.group(3)
        if name in env:
            return env[name]
        if op == ":-":
            return arg
        return "set-by-operator"

    text = text.replace("$$", "\0")
    text = re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}|\$(\w+)", sub, text)
    return text.replace("\0", "$")


def check_cli_command(argv: list[str]) -> str:
    """Resolve argv through the click command tree and parse its options; returns the
    command path. Raises if a command or an option does not exist."""
    assert argv[0] == "orchestrator", argv
    command: click.Command = main
    args = argv[1:]
    path = ["orchestrator"]
    while isinstance(command, click.Group):
        assert args, f"{' '.join(path)} needs a subcommand"
        name, *args = args
        sub = command.get_command(click.Context(command), name)
        assert sub is not None, f"{' '.join(path)} has no command {name!r}"
        command, path = sub, [*path, name]
    command.make_context(" ".join(path), list(args))  # parses: unknown options raise
    return " ".join(path[1:])


def test_the_checker_refuses_what_the_cli_lacks():
    with pytest.raises(AssertionError):
        check_cli_command(["orchestrator", "scheduler"])
    with pytest.raises(click.UsageError):
        check_cli_command(["orchestrator", "api", "--no-such-option"])
    with pytest.raises(click.BadParameter):
        check_cli_command(["orchestrator", "api", "--port", "not-a-number"])
    assert check_cli_command(["orchestrator", "db", "upgrade"]) == "db upgrade"


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services_run_cli_commands_with_health_checks_and_volumes():
    doc = compose()
    services = doc["services"]
    assert set(services) == {"postgres", "redis", *APP_SERVICES}
    seen = {}
    for name in APP_SERVICES:
        svc = services[name]
        assert svc.get("build") == ".", name
        argv = [interpolate(a) for a in svc["command"]]
        seen[name] = check_cli_command(argv)
        env = svc["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:" in env[
            "DATABASE_URL"]
        assert env["BROKER_URL"] == "redis://redis:6379/0"
        assert svc["depends_on"], name
    assert seen == {"migrate": "db upgrade", "api": "api", "worker": "worker", "beat": "beat",
                    "flower": "flower"}
    for name in ("postgres", "redis", "api", "worker", "flower"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("api", "worker", "beat"):  # they need the schema; flower only the broker
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"}
    declared = set(doc["volumes"])
    used = {v.split(":")[0] for svc in services.values() for v in svc.get("volumes", [])
            if not v.startswith(("/", ".", "$"))}
    assert used == declared == {"pgdata", "redisdata", "beat", "flower"}


SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "python", "python3", "node", "perl", "ruby"}


def test_compose_mounts_no_profile_file_whose_shell_profile_an_operator_can_use():
    from orchestrator.profiles import load_profiles

    mounted = {interpolate(v).rsplit(":", 2)[0] for svc in compose()["services"].values()
               for v in svc.get("volumes", []) if "/etc/orchestrator/agents.toml" in v}
    assert mounted == {"./examples/agents.toml"}
    profiles = load_profiles(str(ROOT / "examples" / "agents.toml"))
    interpreters = [p for p in profiles.values() if p.runtime == "command"
                    and Path(p.options["argv"][0]).name in SHELLS]
    assert interpreters, "the examples have a shell profile"
    assert all(p.edit_role == "admin" for p in interpreters), [p.name for p in interpreters]


def test_procfile_processes_run_cli_commands():
    procs = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            procs[name.strip()] = check_cli_command(
                shlex.split(interpolate(command, {"PORT": "5000"})))
    assert procs == {"release": "db upgrade", "web": "api", "worker": "worker",
                     "beat": "beat", "flower": "flower"}


def test_dockerfile_copies_every_package_and_runs_the_api():
    text = (ROOT / "Dockerfile").read_text()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\S+) \1$", text, re.M))
    assert packages <= copied
    cmd = re.search(r"^CMD (.+)$", text, re.M).group(1)
    assert check_cli_command(yaml.safe_load(cmd)) == "api"


def test_docker_compose_accepts_the_file(tmp_path):
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed here, so `docker compose config` cannot run")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker CLI here has no compose plugin, so `docker compose config` "
                    f"cannot run: {probe.stderr.strip()[:200]}")
    result = subprocess.run(
        [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True, text=True, cwd=ROOT,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "API_KEY": "x" * 32,
             "FLOWER_BASIC_AUTH": "admin:secret", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
