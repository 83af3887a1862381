"""The installed distribution claims one top-level name, `curation` (docs/architecture.md, "Packaging").

The repository keeps flows/, tasks/ and dashboards/ at its top level; pyproject.toml's package-dir installs them as
curation.flows, curation.tasks and curation.dashboards. Every import must use those names: a bare `flows.x` import
would load a second copy of the module through the repository root on sys.path, and a monkeypatch of one copy would
silently miss the other.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MOVED = ("flows", "tasks", "dashboards")
SKIPPED_TOP = {".venv", "node_modules", ".git", "build", "dist", "test-artifacts", "data"}
# A module path written out in a string: a monkeypatch or mock target ("flows.curate_dataset.mark_failed").
BARE_MODULE_STRING = re.compile(rf"^({'|'.join(MOVED)})(\.\w+)+$")
# Commands in docs and config: `python -m tasks.blocks`, `prefect block register -m tasks.blocks`, `from tasks.x`.
BARE_MODULE_COMMAND = re.compile(rf"(?:-m|\bfrom|\bimport)\s+({'|'.join(MOVED)})\.\w+")


def _files(*suffixes: str) -> list[Path]:
    found = []
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in SKIPPED_TOP or relative.as_posix().startswith("bench/results/"):
            continue
        if any(part == "__pycache__" or part.startswith(".") or part.endswith(".egg-info") for part in relative.parts):
            continue
        if path.is_file() and (path.suffix in suffixes or path.name in suffixes):
            found.append(path)
    return sorted(found)


def _bare(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in MOVED


def test_no_import_uses_a_bare_flows_tasks_or_dashboards_name():
    offenders = []
    for path in _files(".py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if _bare(alias.name)]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module] if node.level == 0 and _bare(node.module) else []
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value] if BARE_MODULE_STRING.match(node.value) else []
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {name}" for name in names]
    assert not offenders, "use curation.flows / curation.tasks / curation.dashboards:\n" + "\n".join(offenders)


def test_docs_and_config_name_the_installed_modules():
    offenders = []
    for path in _files(".md", ".yaml", ".yml", ".toml", ".cfg", "Makefile"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if match := BARE_MODULE_COMMAND.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)}")
    assert not offenders, "use curation.flows / curation.tasks / curation.dashboards:\n" + "\n".join(offenders)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """A wheel built from a copy of the sources (setuptools' build/ and egg-info stay out of the checkout)."""
    try:
        import setuptools  # noqa: F401 - --no-build-isolation builds with the venv's setuptools
    except ImportError:
        pytest.skip("setuptools is not installed in this environment, so no wheel can be built offline")
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("curation", *MOVED):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out),
         str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("curation-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_the_wheel_installs_only_the_curation_package(wheel):
    names = wheel.namelist()
    dist_info = {name.split("/")[0] for name in names if name.split("/")[0].endswith(".dist-info")}
    assert len(dist_info) == 1, dist_info
    strays = [name for name in names if not name.startswith(("curation/", *dist_info))]
    assert not strays, f"the wheel installs outside curation/: {strays}"
    top_level = wheel.read(f"{dist_info.pop()}/top_level.txt").decode().split()
    assert top_level == ["curation"]
    for name in ("curation/flows/curate_dataset.py", "curation/tasks/blocks.py", "curation/dashboards/main.py"):
        assert name in names


def test_every_module_of_the_checkout_is_in_the_wheel(wheel):
    """pyproject.toml lists the packages: a new subpackage left out of the list fails here."""
    names = set(wheel.namelist())
    sources = {"curation": ROOT / "curation", **{f"curation/{name}": ROOT / name for name in MOVED}}
    missing = [
        f"{prefix}/{path.relative_to(folder).as_posix()}"
        for prefix, folder in sources.items()
        for path in folder.rglob("*.py")
        if "__pycache__" not in path.parts
        and f"{prefix}/{path.relative_to(folder).as_posix()}" not in names
    ]
    assert not missing, f"add the folders of these files to [tool.setuptools] packages: {missing}"
