"""docker/: the compose stack, prefect.yaml and the Dockerfile name only things that exist and stay private.

Docker itself is not needed: the files are parsed, compose's ``${VAR:-default}`` interpolation is applied
with every variable unset (so the defaults are what is checked), every ``mmcaps`` command line goes through
the real argument parser, and every flow entry point is imported.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows import server
from flows.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
MMCAPS_TARGETS = {"mmcaps:cpu": "cpu", "mmcaps:cuda": "cuda"}
IMAGES = {**MMCAPS_TARGETS, "mmcaps:server": "server"}  # the server's image: Prefect without torch

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: Any) -> Any:
    """Compose variable interpolation with every variable unset: ``${X:-d}`` -> d, ``${X}`` -> '', ``$$`` -> $."""
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        op, default = m.group(2), m.group(3)
        if op in (":?", "?"):
            pytest.fail(f"{m.group(0)} makes a variable mandatory; the stack must start with defaults")
        return default if op in (":-", "-") else ""

    return _VAR.sub(substitute, value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return interpolate(yaml.safe_load((DOCKER / "compose.yaml").read_text()))


@pytest.fixture(scope="module")
def prefect_project() -> dict:
    return yaml.safe_load((DOCKER / "prefect.yaml").read_text())


# --- Dockerfile -----------------------------------------------------------------------------------------------


def parse_dockerfile(path: Path) -> tuple[dict[str, str], dict[str, dict]]:
    """(global ARG defaults, stages by name: {"base": FROM image or stage, "instructions": [(KEYWORD, args)]})."""
    text = re.sub(r"\\\n", " ", path.read_text())  # line continuations
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    global_args: dict[str, str] = {}
    stages: dict[str, dict] = {}
    current = None
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, flags=re.IGNORECASE)
            assert m, f"{path}: every stage is named (FROM image AS name): {line!r}"
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda v: global_args[v.group(1) or v.group(2)], m.group(1))
            current = stages[m.group(2)] = {"base": image, "instructions": []}
        elif current is None:
            assert keyword == "ARG", f"{path}: only ARG may come before the first FROM: {line!r}"
            name, _, default = rest.partition("=")
            global_args[name] = default
        else:
            current["instructions"].append((keyword, rest))
    return global_args, stages


def stage_chain(stages: dict[str, dict], target: str) -> list[tuple[str, str]]:
    """Instructions in effect for ``target``, its ancestors' first; the root image is the chain's first entry."""
    chain: list[tuple[str, str]] = []
    name = target
    while name in stages:
        chain = stages[name]["instructions"] + chain
        name = stages[name]["base"]
    return [("IMAGE", name), *chain]


def is_pinned_official(image: str) -> bool:
    """An official Docker library image (no namespace) with an explicit version tag (not latest)."""
    repo, _, tag = image.partition(":")
    return "/" not in repo and "@" not in repo and bool(re.match(r"\d+(\.\d+)+", tag))


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, dict]:
    return parse_dockerfile(DOCKER / "Dockerfile")[1]


@pytest.mark.parametrize("target", sorted(MMCAPS_TARGETS.values()))
def test_dockerfile_target(dockerfile, target):
    assert target in dockerfile, f"docker/Dockerfile has no stage {target!r}: {sorted(dockerfile)}"
    chain = stage_chain(dockerfile, target)
    root_image = chain[0][1]
    assert is_pinned_official(root_image), f"{target} starts from {root_image}, not a pinned official image"

    def of(keyword: str) -> list[str]:
        return [args for k, args in chain if k == keyword]

    runs = " ".join(of("RUN"))
    assert re.search(r"apt-get install[^&;]*\bffmpeg\b", runs), "ffmpeg is installed from Debian"
    assert re.search(r"pip install -r /tmp/requirements.txt\b", runs), "pyproject's dependencies are installed"
    assert re.search(r"pip install --no-deps /opt/mmcaps\b", runs), "mmcaps itself is installed"
    assert ". /opt/mmcaps" in of("COPY"), "the project is copied where prefect.yaml's pull step expects it"

    users = of("USER")
    assert users and users[-1] not in ("root", "0"), f"{target} runs as root"
    assert re.search(rf"useradd\b[^&;]*\b{re.escape(users[-1])}\b", runs), f"user {users[-1]} is created"

    for command in of("RUN"):  # the shell form runs under /bin/sh -c; a syntax error fails only at build time
        check = subprocess.run(["sh", "-n", "-c", command], capture_output=True, text=True)
        assert check.returncode == 0, f"{target}: RUN {command!r}: {check.stderr}"

    assert json.loads(of("ENTRYPOINT")[-1]) == ["mmcaps"]
    assert "/workspace" in json.loads(of("VOLUME")[-1])
    env = " ".join(of("ENV"))
    assert re.search(r"\bMMCAPS_HOME=/workspace\b", env)
    assert re.search(r"\bPREFECT_SERVER_ANALYTICS_ENABLED=false\b", env)


def test_dockerfile_names_no_download_source():
    text = (DOCKER / "Dockerfile").read_text()
    assert not re.search(r"\b(https?|ftp)://", text), "no download URL: indexes are build arguments the user supplies"
    for host in ("pypi.org", "pytorch.org", "pythonhosted.org", "docker.io", "ghcr.io", "nvcr.io", "github.com"):
        assert host not in text


def test_dockerignore_keeps_sources_and_drops_state():
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.strip() and ln[0] != "#"]

    def ignored(rel: str) -> bool:
        return any(fnmatch.fnmatch(rel, p) or rel.split("/")[0] == p for p in patterns)

    for needed in ("pyproject.toml", "README.md", "flows/cli.py", "flows/pipeline.py", "docker/prefect.yaml"):
        assert not ignored(needed), f".dockerignore drops {needed}, which the image build needs"
    for heavy in (".venv", ".git", "mmcaps-data"):
        assert ignored(heavy), f".dockerignore lets {heavy} into the build context"


# --- compose.yaml ---------------------------------------------------------------------------------------------


def test_compose_services(compose):
    services = compose["services"]
    assert {"postgres", "server", "worker", "worker-gpu"} <= set(services)

    pg = services["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    data_volume = pg["volumes"][0].split(":")[0]
    assert data_volume in compose["volumes"], "PostgreSQL data lives in a named volume"
    assert "ports" not in pg, "PostgreSQL is reachable from the stack only"

    srv = services["server"]
    assert srv["depends_on"]["postgres"]["condition"] == "service_healthy"
    cmd = srv["command"]
    db_url = cmd[cmd.index("--database-url") + 1]
    assert server.normalise_database_url(db_url).startswith("postgresql+asyncpg://prefect@")
    assert f"@postgres:5432/{pg['environment']['POSTGRES_DB']}" in db_url
    # The password is a secret file that both read: on no command line, in no environment variable.
    secret = cmd[cmd.index("--database-password-file") + 1]
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == secret == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in pg["environment"] and "postgres_password" in compose["secrets"]
    assert srv["secrets"] == pg["secrets"] == ["postgres_password"]
    assert "/api/health" in " ".join(srv["healthcheck"]["test"])
    assert srv["image"] == "mmcaps:server" and srv["build"]["target"] == "server"

    for name in ("worker", "worker-gpu"):
        worker = services[name]
        assert worker["environment"]["PREFECT_API_URL"] == f"http://server:{cmd[cmd.index('--port') + 1]}/api"
        assert worker["depends_on"]["server"]["condition"] == "service_healthy"
        assert "./videos:/videos:ro" in worker["volumes"], "the video source is mounted read-only"
        assert any(v.endswith(":/workspace") for v in worker["volumes"])
        assert worker["shm_size"] == "2gb", "loader workers need more than Docker's 64 MB of /dev/shm"
        assert "PREFECT_API_URL" in " ".join(worker["healthcheck"]["test"]) and "/health" in " ".join(
            worker["healthcheck"]["test"]
        )

    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["image"] == "mmcaps:cuda"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_compose_images_are_built_here_or_pinned(compose, dockerfile):
    for name, service in compose["services"].items():
        image = service["image"]
        if "build" in service:
            build = service["build"]
            assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
            assert build["target"] in dockerfile, f"{name}: no stage {build['target']!r} in docker/Dockerfile"
            assert IMAGES.get(image) == build["target"], f"{name}: image {image} vs target"
        else:
            assert is_pinned_official(image), f"{name}: {image} is neither built here nor a pinned official image"


def test_compose_mmcaps_commands_parse(compose):
    parser = build_parser()
    seen = set()
    for name, service in compose["services"].items():
        if service["image"] not in IMAGES or "entrypoint" in service:
            continue
        argv = [str(a) for a in service["command"]]
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"service {name}: `mmcaps {' '.join(argv)}` does not parse")
        assert args.command == argv[0] and callable(args.func), name
        seen.add(argv[0])
        if argv[0] == "watch":
            assert str(args.source) == "/videos"
    assert seen == {"server", "watch"}


def test_dockerfile_usage_examples_parse():
    """The `docker run ... mmcaps:TAG ARGS` examples in the Dockerfile's header are valid mmcaps commands."""
    text = re.sub(r"\\\n#\s*", " ", (DOCKER / "Dockerfile").read_text())
    examples = re.findall(r"^#.*\bdocker run\b.*?\bmmcaps:(?:cpu|cuda) (.+)$", text, flags=re.MULTILINE)
    assert len(examples) >= 2
    parser = build_parser()
    for example in examples:
        argv = example.split()
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"Dockerfile example `mmcaps {example}` does not parse")
        assert args.command == argv[0]


def test_compose_ports_bind_loopback(compose):
    published = 0
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                host_ip = port.get("host_ip", "")
            else:
                parts = str(port).rsplit(":", 2)
                assert len(parts) == 3, f"{name}: {port!r} publishes on every interface"
                host_ip = parts[0]
            assert host_ip == "127.0.0.1", f"{name}: {port!r} is published on {host_ip or 'every interface'}"
            published += 1
    assert published == 1  # the UI/API only


def test_process_worker_polls_the_deploy_pool(compose, prefect_project, dockerfile):
    worker = compose["services"]["process-worker"]
    assert worker["entrypoint"] == ["prefect"]
    cmd = worker["command"]
    assert cmd[:2] == ["worker", "start"] and cmd[cmd.index("--type") + 1] == "process"
    pools = {d["work_pool"]["name"] for d in prefect_project["deployments"]}
    assert pools == {cmd[cmd.index("--pool") + 1]}
    # The pull step moves flow runs to MMCAPS_PROJECT_DIR, which the image sets to where it keeps the project.
    (step,) = prefect_project["pull"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ $MMCAPS_PROJECT_DIR }}"
    env = " ".join(args for k, args in stage_chain(dockerfile, "cpu") if k == "ENV")
    assert f"MMCAPS_PROJECT_DIR={worker['working_dir']}" in env


# --- prefect.yaml ---------------------------------------------------------------------------------------------


def test_prefect_yaml_entrypoints_are_flows(prefect_project):
    from prefect import Flow

    deployments = {d["name"]: d for d in prefect_project["deployments"]}
    assert set(deployments) == {"extract", "train", "evaluate", "pipeline"}
    for name, dep in deployments.items():
        path, _, function = dep["entrypoint"].partition(":")
        assert (REPO / path).is_file(), f"{name}: {path} does not exist"
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, function, None)
        assert isinstance(flow, Flow), f"{name}: {dep['entrypoint']} is not a Prefect flow"
        schema = flow.parameters
        given = set(dep.get("parameters") or {})
        assert given <= set(schema.properties), f"{name}: {given - set(schema.properties)} not parameters"
        if dep.get("schedules"):
            # A scheduled run has nobody to fill in parameters: every required one is given here.
            assert set(schema.required or []) <= given, f"{name}: scheduled without {set(schema.required) - given}"
    schedules = deployments["extract"]["schedules"]
    assert schedules and all(("interval" in s) != ("cron" in s) for s in schedules)


def test_prefect_yaml_passes_prefects_own_validation(prefect_project):
    from datetime import timedelta

    from prefect.cli.deploy._models import PrefectYamlModel, RawScheduleConfig

    model = PrefectYamlModel.model_validate(prefect_project)
    by_name = {d.name: d for d in model.deployments}
    (schedule,) = by_name["extract"].schedules
    assert isinstance(schedule, RawScheduleConfig) and schedule.interval == timedelta(hours=1)
    # As `mmcaps watch`: one run at a time of extract and train, and train triggered by new videos.
    raw = {d["name"]: d for d in prefect_project["deployments"]}
    assert raw["extract"]["concurrency_limit"] == raw["train"]["concurrency_limit"] == 1
    (trigger,) = raw["train"]["triggers"]
    assert trigger["expect"] == ["mmcaps.extract.completed"]
    dataset = raw["train"]["parameters"]["datasets"][0]
    assert trigger["match"]["prefect.resource.id"] == f"mmcaps.dataset.{dataset}" == "mmcaps.dataset.videos"
    # and evaluate triggered by a finished training run of that dataset, on the run the event names
    from prefect.events import DeploymentEventTrigger

    (raw_trigger,) = raw["evaluate"]["triggers"]
    evaluated = DeploymentEventTrigger.model_validate({k: v for k, v in raw_trigger.items() if k != "type"})
    assert evaluated.expect == {"mmcaps.train.completed"}
    assert evaluated.parameters == {"run_id": "{{ event.payload.run_id }}"}
    related = evaluated.match_related[0] if isinstance(evaluated.match_related, list) else evaluated.match_related
    assert related.root == {"prefect.resource.id": f"mmcaps.dataset.{dataset}", "prefect.resource.role": "dataset"}
    assert raw["evaluate"]["concurrency_limit"] == 1
    assert all(d.work_pool is not None and d.work_pool.name == "mmcaps-process" for d in model.deployments)


def test_pyproject_requirements_matches_pyproject(tmp_path):
    import tomllib

    script = DOCKER / "pyproject_requirements.py"
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]

    def run(*extra: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, script, REPO / "pyproject.toml", *extra], capture_output=True, text=True, check=True
        )
        return out.stdout.split()

    assert run() == declared
    torch_reqs = [d for d in declared if re.match(r"(torch|torchvision)\b(?!-)", d)]
    assert len(torch_reqs) == 2 and run("--only", "torch", "TorchVision") == torch_reqs
    assert run("--exclude", "torch", "torchvision") == [d for d in declared if d not in torch_reqs]


@pytest.mark.slow
def test_prefect_deploy_registers_the_deployments(prefect_api, prefect_project, tmp_path):
    """`prefect deploy --all --prefect-file docker/prefect.yaml`, the real CLI, against a real API."""

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    pool = prefect_project["deployments"][0]["work_pool"]["name"]
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))  # what `prefect worker start` does

    deploy = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", "docker/prefect.yaml"],
        cwd=REPO,
        env={**os.environ, "PREFECT_API_URL": api_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]

    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments() if d.work_pool_name == pool}
    expected = {d["name"]: d for d in prefect_project["deployments"]}
    assert set(deployments) == set(expected)
    for name, dep in deployments.items():
        assert dep.entrypoint == expected[name]["entrypoint"]
        assert dep.parameters == (expected[name].get("parameters") or {})
        assert dep.pull_steps == prefect_project["pull"]
    # What a process worker does before running a flow: the pull steps, then the entry point from there. In a
    # separate process, as a worker does: loading an entry point by file path imports flows/pipeline.py under the
    # top-level name "pipeline", which must not leak into this test process (or the Dask workers it spawns later).
    script = (
        "import asyncio, json, os, sys\n"
        "from pathlib import Path\n"
        "from prefect.deployments.steps.core import run_steps\n"
        "from prefect.flows import load_flow_from_entrypoint\n"
        "steps = json.loads(sys.argv[1])\n"
        "asyncio.run(run_steps(steps))\n"
        "print(Path.cwd())\n"
        "print(load_flow_from_entrypoint(sys.argv[2]).name)\n"
    )
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            json.dumps(deployments["extract"].pull_steps),
            deployments["extract"].entrypoint,
        ],
        cwd=tmp_path,
        env={**os.environ, "PREFECT_API_URL": api_url, "MMCAPS_PROJECT_DIR": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    cwd, name = loaded.stdout.strip().splitlines()[-2:]
    assert Path(cwd) == REPO and name == "extract"

    (schedule,) = deployments["extract"].schedules
    assert schedule.schedule.interval.total_seconds() == expected["extract"]["schedules"][0]["interval"]
    assert schedule.active
    assert not deployments["train"].schedules
