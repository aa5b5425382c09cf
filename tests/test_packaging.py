"""The package as a user installs it: the wheel's contents, the README's install lines, `make demo`."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

import sora_async

ROOT = pathlib.Path(__file__).parent.parent
README = ROOT / "README.md"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A wheel built from this checkout the way `make dist` builds it."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        # pip builds in an isolated environment and must find hatchling on an index.
        if "hatchling" in result.stderr and "No matching distribution" in result.stderr:
            pytest.skip("the build backend (hatchling) cannot be found: no package index reachable")
        pytest.fail(f"pip wheel failed:\n{result.stderr}")
    (built,) = out.glob("*.whl")
    return built


def test_wheel_has_the_typing_marker_assets_and_command(wheel: pathlib.Path) -> None:
    """The wheel carries py.typed, the sample files the fake server serves, and the console script."""
    assert wheel.name == f"sora_async-{sora_async.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"sora_async-{sora_async.__version__}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert "sora_async/py.typed" in names
    assets = {name for name in names if name.startswith("sora_async/_assets/")}
    assert assets == {"sora_async/_assets/sample.mp4", "sora_async/_assets/sample.jpg"}
    assert {"sora_async/cli/__init__.py", "sora_async/testing.py", "sora_async/__main__.py"} <= names
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)
    assert "sora-async = sora_async.cli:main" in entry_points
    assert "Provides-Extra: cli" in metadata
    assert re.search(r"^Requires-Dist: rich.*extra == .cli.", metadata, flags=re.MULTILINE)


def test_installed_wheel_runs_from_its_own_files(wheel: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """Installed (not from this checkout), the package imports, finds its sample video and runs."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        timeout=120,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}  # ahead of this checkout's editable install
    code = (
        "import sora_async, sora_async.testing as t; "
        "print(sora_async.__file__); print(len(t.sample_file('mp4')), len(t.sample_file('jpg')))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert shown[0].startswith(str(target))
    assert shown[1] == f"{len(asset('mp4'))} {len(asset('jpg'))}"
    version = subprocess.run(
        [sys.executable, "-m", "sora_async", "--version"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == f"sora-async {sora_async.__version__}"


def asset(kind: str) -> bytes:
    return (ROOT / "sora_async" / "_assets" / f"sample.{kind}").read_bytes()


def test_readme_installs_from_a_clone_or_the_wheel_make_dist_builds(wheel: pathlib.Path) -> None:
    """Every `pip install` in the README names this folder or the wheel `make dist` writes, never an
    unpublished name from an index."""
    commands = [
        line.split("#")[0].strip()
        for line in README.read_text().splitlines()
        if line.startswith("pip install ")
    ]
    assert "pip install '.[cli]'" in commands
    assert f"pip install 'dist/{wheel.name}[cli]'" in commands
    for command in commands:
        (target,) = command.split()[2:]
        assert target.strip("'").startswith((".", "dist/")), command
    assert f"writes dist/{wheel.name}" in README.read_text()


def test_make_demo_installs_only_the_cli_extra_and_make_test_the_tools() -> None:
    """`make demo` gets its own venv with the package and its cli extra; `make test` the dev tools."""
    make = shutil.which("make")
    assert make is not None, "make is one of the two set-up commands' requirements"
    env = {k: v for k, v in os.environ.items() if k != "COMETAPI_KEY"}

    def plan(target: str) -> str:
        # -B: as from a fresh clone, so every install step is shown; -n: show, run nothing.
        return subprocess.run(
            [make, "-nB", target], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        ).stdout

    demo = plan("demo")
    installs = [line for line in demo.splitlines() if "pip install" in line]
    assert len(installs) == 1, installs
    assert installs[0].startswith(".venv-demo/bin/python -m pip install --quiet '.[cli]'")
    assert not re.search(r"dev|bench|-e ", " ".join(installs))
    assert ".venv-demo/bin/sora-async --fake generate" in demo
    assert "-o ./demo-output/ --force\n" in demo + "\n"  # a second make demo replaces its own file
    test = plan("test")
    assert "-e '.[dev,bench]'" in test
    assert ".venv-demo" not in test
    assert "pip wheel --quiet --no-deps --wheel-dir dist ." in plan("dist")
