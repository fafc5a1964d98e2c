"""The container engine the deploy test drives: Docker (with Compose v2) or Podman (with podman-compose).

Only the engine's command line is used; the service itself is reached through its published port alone.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

# What makes the deploy test run on a machine like CI's (Debian, root, no Docker daemon, no registry).
ENABLE = "sudo docker/install-podman.sh"
LOCAL_BASE_IMAGE = "localhost/babelsearch-base:bookworm"  # what docker/make-base-image.sh makes


@dataclass(frozen=True)
class Engine:
    name: str  # "docker" | "podman"
    compose: tuple[str, ...]  # ("docker", "compose") | ("podman-compose",)

    def run(self, *args: str, timeout: float, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        return _run([self.name, *args], timeout=timeout, check=check, env=env)

    def compose_run(self, project: str, compose_file: str, *args: str, timeout: float, env: dict,
                    check: bool = True) -> subprocess.CompletedProcess:
        return _run([*self.compose, "-p", project, "-f", compose_file, *args], timeout=timeout, check=check, env=env)

    def project_containers(self, project: str) -> list[str]:
        # Both compose implementations label what they create with the project name.
        out = self.run("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}", timeout=60).stdout
        return out.split()

    def project_volumes(self, project: str) -> list[str]:
        out = self.run("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}",
                       timeout=60, check=False).stdout
        return out.split()

    def has_image(self, image: str) -> bool:
        return self.run("image", "inspect", image, timeout=60, check=False).returncode == 0

    def image_bytes(self, image: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", image, timeout=60).stdout.strip())

    def build_args(self) -> list[str]:
        # podman writes OCI images by default, and the OCI format has no HEALTHCHECK.
        return ["--format", "docker"] if self.name == "podman" else []


def _run(command: list[str], timeout: float, check: bool, env: dict | None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def _works(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_engine() -> Engine | None:
    """Docker when its daemon answers and Compose v2 is there, else Podman with podman-compose; None when
    neither works (a docker CLI without a daemon does not count). BABELSEARCH_ENGINE=docker|podman picks."""
    wanted = os.environ.get("BABELSEARCH_ENGINE")
    for name in [wanted] if wanted else ["docker", "podman"]:
        if shutil.which(name) is None or not _works([name, "info"]):
            continue
        if name == "docker" and _works(["docker", "compose", "version"]):
            return Engine("docker", ("docker", "compose"))
        if name == "podman" and shutil.which("podman-compose"):
            return Engine("podman", ("podman-compose",))
    return None
