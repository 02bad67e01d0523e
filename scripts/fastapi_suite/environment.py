"""The cached place FastAPI's tests run in: its sdist, extracted, and a venv to run it.

Everything lives in ``.fastapi-suite/<version>/`` (gitignored) and is made once per FastAPI
version: the sdist (``pip download`` by package name, so the default registry settings
apply), its extracted tree (FastAPI's ``tests/``, ``docs_src/`` and pytest configuration),
and a venv with the same Python as this project's, holding FastAPI from that sdist with its
``all`` extra, its ``tests`` dependency group, this project (editable, so the run tests the
working tree) and pytest-xdist. A stamp in the venv tells a finished install from a broken
one; a second run reuses all of it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".fastapi-suite"


@dataclass(frozen=True)
class Suite:
    """Where one FastAPI version's tests run."""

    version: str
    root: Path

    @property
    def source(self) -> Path:
        """The extracted sdist: FastAPI's checkout, the working directory of the test run."""
        return self.root / f"fastapi-{self.version}"

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def results(self) -> Path:
        """Outcome files and pytest logs of the latest run."""
        return self.root / "results"


def prepare(version: str) -> Suite:
    """Make (or reuse) the sdist tree and the venv for FastAPI ``version``."""
    suite = Suite(version, CACHE / version)
    suite.results.mkdir(parents=True, exist_ok=True)
    if not suite.python.exists():
        _run("uv", "venv", "--quiet", "--seed", "--python", sys.executable, str(suite.venv))
    if not (suite.source / "pyproject.toml").exists():
        _extract(_download(suite), suite)
    stamp = suite.venv / ".fastapi-suite-installed"
    key = _install_key(suite)
    if not stamp.exists() or stamp.read_text() != key:
        _install(suite)
        stamp.write_text(key)
    return suite


def _download(suite: Suite) -> Path:
    target = suite.root / "sdist"
    found = sorted(target.glob(f"fastapi-{suite.version}.tar.gz"))
    if not found:
        print(f"Downloading the FastAPI {suite.version} sdist", flush=True)
        _run(
            str(suite.python), "-m", "pip", "download", "--quiet", "--no-deps",
            "--no-binary", ":all:", "--dest", str(target), f"fastapi=={suite.version}",
        )  # fmt: skip
        found = sorted(target.glob(f"fastapi-{suite.version}.tar.gz"))
    if not found:
        raise RuntimeError(f"pip download left no fastapi-{suite.version}.tar.gz in {target}")
    return found[0]


def _extract(archive: Path, suite: Suite) -> None:
    """Unpack next to the final place, then move it there, so a broken unpack is not kept."""
    with tempfile.TemporaryDirectory(dir=suite.root) as scratch:
        with tarfile.open(archive) as tar:
            tar.extractall(scratch, filter="data")
        unpacked = Path(scratch) / suite.source.name
        if not (unpacked / "tests").is_dir():
            raise RuntimeError(f"{archive.name} has no tests/ directory")
        shutil.rmtree(suite.source, ignore_errors=True)
        unpacked.rename(suite.source)


def _install(suite: Suite) -> None:
    print(f"Installing FastAPI {suite.version} and its test dependencies", flush=True)
    _run(
        "uv", "pip", "install", "--quiet", "--python", str(suite.python),
        f"{suite.source}[all]",
        "--group", f"{suite.source / 'pyproject.toml'}:tests",
        "--editable", str(REPO),
        "pytest-xdist",
    )  # fmt: skip


def _install_key(suite: Suite) -> str:
    """What the install depends on: the version, this Python, this project's metadata."""
    metadata = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    return f"fastapi {suite.version}\npython {sys.version}\nproject {metadata}\n"


def _run(*command: str) -> None:
    subprocess.run(command, check=True, cwd=REPO)
