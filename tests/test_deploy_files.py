"""Dockerfile, compose.yaml and .dockerignore, checked without Docker (this machine has no daemon)
and without a YAML parser (PyYAML is not a dependency): every MAB_* variable they set is a real
setting and parses into the settings object; every program, subcommand, option, module, app object
and queue their commands name exists; the files the image copies are enough to migrate a database
and import every process from a copy of them; the production shape holds (AOF, noeviction, one
beat, a one-shot migration before the rest, required secrets)."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
import typer.main
from celery import Celery
from sqlalchemy.engine import make_url

from campaigns.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = (ROOT / "compose.yaml").read_text()
DOCKERFILE = (ROOT / "Dockerfile").read_text()
DOCKERIGNORE = (ROOT / ".dockerignore").read_text()
SETTINGS_VARIABLES = {f"MAB_{name.upper()}" for name in Settings.model_fields}
APP_SERVICES = ("migrate", "api", "worker", "beat")

# --- a small reader for the parts of compose.yaml the tests need ---------------------------------------


def interpolate(text: str) -> str:
    """Compose's ${VAR:-default} -> default, ${VAR:?error} -> a stand-in value, ${VAR} -> ''."""
    def value(match):
        name, op, rest = match.group(1), match.group(2), match.group(3)
        return rest if op == ":-" else ("required-" + name.lower() if op == ":?" else "")

    return re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", value, text)


def blocks(text: str, indent: int) -> dict[str, list[str]]:
    """Keys at `indent` spaces -> the lines under them (deeper-indented), comments dropped."""
    out, current = {}, None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        depth = len(line) - len(line.lstrip())
        key = re.match(r"([\w.-]+):", line.strip())
        if depth == indent and key:
            current = key.group(1)
            out[current] = [line]
        elif depth > indent and current is not None:
            out[current].append(line)
        elif depth < indent:
            current = None
    return out


def top_level(name: str) -> list[str]:
    return blocks(COMPOSE, 0)[name]


SERVICES = blocks("\n".join(top_level("services")[1:]), 2)


def service_value(service: str, key: str) -> str | None:
    for line in SERVICES[service]:
        match = re.match(rf"\s{{4}}{key}: (.+)$", line)
        if match:
            return match.group(1).strip()
    return None


def service_list(service: str, key: str) -> list[str] | None:
    """entrypoint / command: written as one-line JSON lists (a form YAML shares with JSON)."""
    raw = service_value(service, key)
    return None if raw is None else [interpolate(item) for item in json.loads(raw)]


def inherits_app_service(service: str) -> bool:
    return any(line.strip() == "<<: *mab-service" for line in SERVICES[service])


def environment(service: str) -> dict[str, str]:
    """x-mab-environment, plus a service's own additions."""
    env = {}
    lines = top_level("x-mab-environment")[1:]
    if service == "worker":
        lines += [line for line in SERVICES["worker"] if re.match(r"\s{6}MAB_\w+:", line)]
    for line in lines:
        key, _, value = line.strip().partition(": ")
        if key.startswith("MAB_"):
            env[key] = interpolate(value).strip('"')
    return env


def full_command(service: str) -> list[str]:
    entrypoint = service_list(service, "entrypoint") or json.loads(re.search(r"^ENTRYPOINT (.+)$", DOCKERFILE,
                                                                             re.M).group(1))
    return entrypoint + (service_list(service, "command") or [])


# --- variables ------------------------------------------------------------------------------------------


def test_every_mab_variable_the_files_name_is_a_setting():
    named = set(re.findall(r"\bMAB_[A-Z0-9_]+\b", COMPOSE + DOCKERFILE))
    assert named, "the files configure nothing?"
    assert named <= SETTINGS_VARIABLES, f"not settings: {sorted(named - SETTINGS_VARIABLES)}"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_service_environment_parses_into_the_settings_object(service, monkeypatch):
    for key in [k for k in os.environ if k.startswith("MAB_")]:
        monkeypatch.delenv(key)
    env = environment(service)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert make_url(settings.resolved_database_url()).drivername == "postgresql+psycopg"
    assert make_url(settings.resolved_database_url()).host == "postgres"
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.signing_secret == "required-mab_signing_secret"  # noqa: S105 (${...:?}: no default)
    assert settings.log_format == "json"
    assert str(settings.var_dir) == "/var/lib/mab" and str(settings.outbox_dir) == "/var/lib/mab/outbox"
    if service == "worker":
        assert settings.worker_metrics_port == 9101


def test_every_other_variable_the_compose_file_reads_is_listed_in_its_header():
    header = COMPOSE.split("\nname:", 1)[0]
    others = set(re.findall(r"\$\{(\w+)", COMPOSE)) - SETTINGS_VARIABLES
    assert others, "compose.yaml reads no shaping variables?"
    assert all(name in header for name in others), sorted(n for n in others if n not in header)


def test_the_secrets_have_no_default_so_compose_refuses_to_start_without_them():
    assert "${MAB_SIGNING_SECRET:?" in COMPOSE
    assert COMPOSE.count("${POSTGRES_PASSWORD:?") == 2  # the database's own and the URL's
    assert "dev-only" not in COMPOSE


# --- commands -------------------------------------------------------------------------------------------


def options_of(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def check_options(args: list[str], command: click.Command) -> None:
    known = options_of(command)
    for arg in args:
        if arg.startswith("-"):
            assert arg.split("=", 1)[0] in known, f"{command.name} has no option {arg}"


def test_mab_commands_exist():
    cli = typer.main.get_command(__import__("campaigns.cli", fromlist=["app"]).app)
    assert full_command("migrate") == ["mab", "migrate"]
    assert "migrate" in cli.commands
    # the header's first-admin-key recipe: `docker compose run --rm migrate create-key --role admin --name ops`
    recipe = re.search(r"docker compose run --rm migrate (create-key .+?)\s+#", COMPOSE).group(1).split()
    assert recipe[0] in cli.commands
    check_options(recipe[1:], cli.commands[recipe[0]])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mab"] == "campaigns.cli:app"


def test_the_api_command_names_a_real_app_and_real_uvicorn_options():
    from fastapi import FastAPI
    from uvicorn.main import main as uvicorn_cli

    command = full_command("api")
    assert command[0] == "uvicorn"
    module, _, attribute = command[1].partition(":")
    assert isinstance(getattr(__import__(module, fromlist=[attribute]), attribute), FastAPI)
    check_options(command[2:], uvicorn_cli)
    workers = command[command.index("--workers") + 1]
    assert int(workers) >= 2  # "several uvicorn workers"


@pytest.mark.parametrize("service", ["worker", "beat"])
def test_the_celery_commands_name_the_real_app_subcommand_options_and_queue(service):
    from celery.bin.beat import beat as beat_cli
    from celery.bin.celery import celery as celery_cli
    from celery.bin.worker import worker as worker_cli

    command = full_command(service)
    assert command[:2] == ["celery", "-A"]
    module = __import__(command[2], fromlist=["_"])
    apps = [value for value in vars(module).values() if isinstance(value, Celery)]
    assert len(apps) == 1, "celery -A finds the app by scanning the module for one Celery instance"
    assert command[3] == service
    check_options(command[4:], {"worker": worker_cli, "beat": beat_cli}[service])
    assert "-A" in options_of(celery_cli)
    if service == "worker":
        queues = command[command.index("-Q") + 1].split(",")
        assert apps[0].conf.task_default_queue in queues
        assert not {"-B", "--beat"} & set(command), "beat runs in its own service, exactly once"


def test_every_container_that_runs_our_code_runs_a_known_command():
    runs_code = [name for name in SERVICES if inherits_app_service(name) or "build: ." in "".join(SERVICES[name])]
    assert sorted(runs_code) == sorted(APP_SERVICES)


# --- the production shape -------------------------------------------------------------------------------


def test_redis_keeps_an_append_only_file_and_never_evicts():
    command = service_list("redis", "command")
    pairs = {command[i]: command[i + 1] for i in range(1, len(command) - 1, 2)}
    assert command[0] == "redis-server"
    assert pairs["--appendonly"] == "yes"
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert any(":/data" in line for line in SERVICES["redis"])  # the AOF lives on a volume
    assert re.search(r"healthcheck:\s+test: \[\"CMD\", \"redis-cli\", \"ping\"\]", "\n".join(SERVICES["redis"]))


def test_postgres_has_a_volume_and_a_healthcheck_the_others_wait_for():
    block = "\n".join(SERVICES["postgres"])
    assert "postgres-data:/var/lib/postgresql/data" in block
    assert "pg_isready" in block
    assert "postgres-data" in "\n".join(top_level("volumes"))
    shared = "\n".join(top_level("x-mab-service"))
    assert re.search(r"postgres:\s+condition: service_healthy", shared)
    assert re.search(r"redis:\s+condition: service_healthy", shared)


def test_migrations_run_once_before_the_api_workers_and_beat_start():
    assert service_value("migrate", "restart") == '"no"'
    assert re.search(r"migrate:\s+condition: service_completed_successfully", "\n".join(top_level("x-mab-service")))
    assert all(inherits_app_service(name) for name in ("api", "worker", "beat"))
    assert not inherits_app_service("migrate")  # it must not wait for itself


def test_exactly_one_beat_and_scalable_workers():
    assert any(line.strip() == "replicas: 1" for line in SERVICES["beat"])
    beats = [name for name in SERVICES if "beat" in (service_list(name, "command") or [])]
    assert beats == ["beat"]
    replicas = next(line for line in SERVICES["worker"] if "replicas:" in line)
    assert int(interpolate(replicas.split(":", 1)[1].strip())) >= 2


# --- the image ------------------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.splitlines()
                                         if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def copied_sources() -> list[str]:
    return [src for kind, args in instructions() if kind == "COPY" for src in args.split()[:-1]]


def test_the_image_is_python_311_slim_runs_as_a_non_root_user_and_enters_through_mab():
    steps = instructions()
    # Docker Hub's python:3.11-slim by default; deploy/smoke.sh passes a local one built from Debian's packages
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    assert steps[1] == ("FROM", "${BASE_IMAGE}")
    users = [args for kind, args in steps if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("ENTRYPOINT", '["mab"]') in steps
    assert any(kind == "RUN" and "pip install" in args and "-e ." in args for kind, args in steps)


def test_the_image_copies_every_package_and_the_files_the_code_finds_beside_them():
    sources = copied_sources()
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pattern in packages["include"]:
        assert pattern.rstrip("*") in sources, f"package {pattern} is not copied"
    # campaigns/settings.py PROJECT_ROOT: alembic/ (migrations) and templates/ (the HTML report)
    assert {"alembic.ini", "alembic", "templates", "pyproject.toml", "README.md"} <= set(sources)


def test_dockerignore_keeps_state_and_secrets_out_and_lets_every_copied_file_in():
    patterns = [line.strip() for line in DOCKERIGNORE.splitlines() if line.strip() and not line.startswith("#")]
    for must in (".venv", "var", ".git", ".env"):
        assert must in patterns
    for source in copied_sources():
        assert source not in patterns and f"{source}/" not in patterns


def test_the_files_the_image_copies_are_enough_to_migrate_and_import_every_process(tmp_path):
    """Lay out /app as the Dockerfile does (only what it copies), then, from there: run its
    requirements one-liner, `mab migrate` a fresh database, import the API and the Celery app."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    for source in copied_sources():
        origin = ROOT / source
        if origin.is_dir():
            shutil.copytree(origin, app_dir / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, app_dir / source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAB_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(MAB_VAR_DIR=str(tmp_path / "state"), PYTHONDONTWRITEBYTECODE="1")

    def run(args: list[str]) -> str:
        done = subprocess.run(args, cwd=app_dir, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    requirements_step = next(args for kind, args in instructions() if kind == "RUN" and "tomllib" in args)
    one_liner = shlex.split(requirements_step.split(">", 1)[0])
    assert one_liner[:2] == ["python", "-c"]
    listed = run([sys.executable, "-c", one_liner[2]]).split()
    assert listed == [d.replace(" ", "") for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"]]

    run([sys.executable, "-m", "campaigns.cli", "migrate"])
    assert (tmp_path / "state" / "mab.db").stat().st_size > 0
    where = run([sys.executable, "-c", "import campaigns, api.app, worker.app; print(campaigns.__file__)"])
    assert Path(where.strip()).is_relative_to(app_dir), "the copy, not the repository, must have been imported"


def test_the_metrics_tmpfs_is_writable_by_the_unprivileged_user():
    # podman mounts a tmpfs over a directory that exists in the image as root's 0755, whatever the mode
    assert not any(kind == "RUN" and "/var/lib/mab/metrics" in args for kind, args in instructions())
    for service in ("api", "worker"):
        assert "      - /var/lib/mab/metrics:mode=1777" in SERVICES[service]


def test_the_smoke_script_skips_and_succeeds_where_there_is_no_podman(tmp_path):
    """CI must never fail because a machine has no container runtime (.ci/run, deploy/smoke.sh)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("mktemp", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    done = subprocess.run([shutil.which("bash"), str(ROOT / "deploy" / "smoke.sh")], env={"PATH": str(bin_dir)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("SKIPPED: deploy/smoke.sh: podman is not installed")
