"""docker-compose.yml: healthchecks everywhere, only real settings passed, and the parts wired as documented."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from authsvc.config import Settings

ROOT = Path(__file__).resolve().parent.parent
# Read by gunicorn.conf.py and prometheus-client, not by authsvc/config.py.
PROCESS_VARIABLES = {"GUNICORN_WORKERS", "PROMETHEUS_MULTIPROC_DIR"}
AUTHSVC_SERVICES = ("web", "mail", "cleanup")


@pytest.fixture(scope="module")
def services() -> dict:
    """The services of docker-compose.yml (YAML anchors and merge keys resolved)."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_every_long_running_service_has_a_healthcheck(services):
    assert set(services) >= {"db", "redis", *AUTHSVC_SERVICES}
    for name, service in services.items():
        if "tools" in service.get("profiles", []):
            continue  # one-shot commands
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert service["restart"] == "unless-stopped", name


def test_only_real_settings_are_passed(services):
    for name in AUTHSVC_SERVICES:
        unknown = set(services[name]["environment"]) - set(Settings.model_fields) - PROCESS_VARIABLES
        assert unknown == set(), (name, unknown)


def test_web_migrates_then_serves_and_the_mail_service_sends(services):
    web, mail = services["web"], services["mail"]
    assert services["db"]["image"].startswith("postgres:15")
    # web keeps the image's command, which migrates before gunicorn starts.
    assert "command" not in web
    assert "authsvc db upgrade && exec gunicorn -c gunicorn.conf.py wsgi:app" in (ROOT / "Dockerfile").read_text()
    assert "/readyz" in " ".join(web["healthcheck"]["test"])
    assert web["environment"]["MAIL_WORKER"] == "false" and web["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert mail["command"][:3] == ["authsvc", "mail", "worker"]
    assert mail["depends_on"]["web"]["condition"] == "service_healthy"
    assert {s["condition"] for s in web["depends_on"].values()} == {"service_healthy"}
    assert services["cleanup"]["command"][-1].startswith("authsvc cleanup")


@pytest.mark.parametrize("age, healthy", [(0, True), (120, False), (None, False)])
def test_the_mail_healthcheck_reads_the_workers_heartbeat(services, tmp_path, age, healthy):
    command = services["mail"]["command"]
    heartbeat = command[command.index("--heartbeat") + 1]
    check = services["mail"]["healthcheck"]["test"]
    assert check[:2] == ["CMD", "python"]
    local = tmp_path / "heartbeat"
    if age is not None:
        local.touch()
        os.utime(local, (time.time() - age, time.time() - age))
    args = [sys.executable, *[arg.replace(heartbeat, str(local)) for arg in check[2:]]]
    assert (subprocess.run(args, capture_output=True, timeout=30).returncode == 0) is healthy
