"""Make the virtual environment and install into it with uv, as pip would.

`make install` runs `python3 scripts/install.py VENV REQUIREMENT...`. uv (from
PyPI, into the venv) resolves and downloads in parallel and keeps every wheel
it has unpacked in its cache (~/.cache/uv), from which a fresh clone's venv is
filled with hard links in seconds; pip unpacked and byte-compiled each wheel
anew, ~1.8 GB with PyTorch. Modules are byte-compiled on first import instead
(see the Makefile). pip is installed into the venv too, for whoever uses it.

uv reads no pip configuration, so pip's own (`pip config list`: its files and
PIP_* variables) is handed to uv as options: the indexes, find-links and
constraints, with pip's choice of the best version across all of them. Should
that configuration hold an option this does not know, or uv fail, pip installs
instead, as it always did.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

UV_REQUIREMENT = "uv>=0.8,<1"
PIP_QUIET = ["-q", "--disable-pip-version-check"]
# pip options that change nothing of what is installed.
HARMLESS = {
    "disable-pip-version-check",
    "no-cache-dir",
    "cache-dir",
    "progress-bar",
    "quiet",
    "verbose",
    "no-input",
    "no-color",
    "retries",
    "root-user-action",
    "require-virtualenv",
}
# pip options uv takes once for each value (pip's are separated by whitespace).
REPEATED = {
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}
# pip options uv reads from a variable.
VARIABLES = {
    "cert": "SSL_CERT_FILE",
    "client-cert": "SSL_CLIENT_CERT",
    "timeout": "UV_HTTP_TIMEOUT",
    "default-timeout": "UV_HTTP_TIMEOUT",
}


class Unsupported(Exception):
    """pip's configuration has an option this cannot hand to uv."""


def run(*command: str | Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command], check=True, stdout=subprocess.PIPE, text=True, env=env
    )
    return done.stdout


def has_pip(python: str | Path) -> bool:
    done = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, check=False)
    return done.returncode == 0


def ensure_pip(python: Path) -> None:
    if not has_pip(python):
        run(python, "-m", "ensurepip", "-q")


def pip_configuration(pip: list[str | Path]) -> dict[str, str]:
    """pip's setting for `install`, by option name: PIP_* over [install] over [global]."""
    by_section: dict[str, dict[str, str]] = {}
    for line in run(*pip, "config", "list").splitlines():
        key, _, value = line.partition("=")
        section, _, name = key.rpartition(".")
        by_section.setdefault(section, {})[name] = str(ast.literal_eval(value))
    chosen: dict[str, str] = {}
    for section in ("global", "install", ":env:"):
        chosen.update(by_section.get(section, {}))
    return chosen


def uv_options(config: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """uv's options and environment variables for pip's configuration."""
    options = ["--index-strategy", "unsafe-best-match"]  # pip's: the best version anywhere
    env: dict[str, str] = {}
    for name, value in config.items():
        if name in REPEATED:
            for item in value.split():
                options += [REPEATED[name], item]
        elif name in VARIABLES:
            env.setdefault(VARIABLES[name], value)
        elif name == "index-url":
            options += ["--index-url", value]
        elif name == "no-index":
            options += ["--no-index"] if value.lower() in ("1", "true", "yes", "on") else []
        elif name not in HARMLESS:
            raise Unsupported(f"pip's option {name}={value!r}")
    return options, env


def install_with_uv(python: Path, requirements: list[str]) -> None:
    # This interpreter's pip installs uv into the venv, which needs no pip of
    # its own for that; without one here, the venv gets pip first.
    pip: list[str | Path] = [sys.executable, "-m", "pip"]
    if not has_pip(sys.executable):
        ensure_pip(python)
        pip = [python, "-m", "pip"]
    uv = python.parent / "uv"
    if not uv.exists():
        run(*pip, "--python", python, "install", *PIP_QUIET, UV_REQUIREMENT)
    options, env = uv_options(pip_configuration(pip))
    install: list[str | Path] = [uv, "pip", "install", "-q", "--python", python, *options]
    run(*install, "pip", *requirements, env={**os.environ, **env})


def install_with_pip(python: Path, requirements: list[str]) -> None:
    ensure_pip(python)
    run(python, "-m", "pip", "install", *PIP_QUIET, "--upgrade", "pip")
    run(python, "-m", "pip", "install", *PIP_QUIET, *requirements)


def main() -> None:
    venv, requirements = Path(sys.argv[1]), sys.argv[2:]
    python = venv / "bin" / "python"
    if not python.exists():
        run(sys.executable, "-m", "venv", "--without-pip", venv)
    try:
        install_with_uv(python, requirements)
    except (Unsupported, subprocess.CalledProcessError, OSError) as exc:
        print(f"install: uv could not install ({exc}); pip installs instead", file=sys.stderr)
        install_with_pip(python, requirements)


if __name__ == "__main__":
    main()
