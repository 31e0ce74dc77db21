"""The runtime image, checked by reading it: CI has no container engine to build it.

The Dockerfile must install exactly the locked runtime dependencies (hash-checked wheels),
copy proxy/ and nothing else of the repository, and run as the non-root user the chart
expects. requirements.lock must pin every runtime dependency of pyproject.toml, within the
range pyproject allows, and nothing from the dev extra (TensorFlow above all)."""

from __future__ import annotations

import pathlib
import re
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()
LOCK = (REPO / "requirements.lock").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VALUES = yaml.safe_load((REPO / "helm" / "tfgate" / "values.yaml").read_text())


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE)
    last = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last:]


def pins() -> dict[str, str]:
    """name -> version for each pinned requirement, after checking each carries hashes."""
    found = {}
    for block in re.split(r"\n(?=\S)", LOCK):
        head = block.split("\\", 1)[0].strip()
        if not head or head.startswith("#"):
            continue
        name, sep, version = head.partition("==")
        assert sep, f"not an exact pin: {head!r}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), f"{head} has no hash"
        found[canonicalize_name(name)] = version.strip()
    return found


class TestLock:
    def test_every_runtime_dependency_is_pinned_within_its_range(self):
        locked = pins()
        for spec in PYPROJECT["project"]["dependencies"]:
            requirement = Requirement(spec)
            name = canonicalize_name(requirement.name)
            assert name in locked, f"{name} is a runtime dependency but not in the lock"
            assert requirement.specifier.contains(locked[name], prereleases=True), (
                f"{name}=={locked[name]} is outside pyproject's {requirement.specifier}")

    def test_nothing_from_the_dev_extra(self):
        """The image carries no TensorFlow, test or build tooling."""
        locked = set(pins())
        runtime = {canonicalize_name(Requirement(s).name)
                   for s in PYPROJECT["project"]["dependencies"]}
        dev = {canonicalize_name(Requirement(s).name)
               for s in PYPROJECT["project"]["optional-dependencies"]["dev"]}
        assert not (dev - runtime) & locked
        assert {"tensorflow", "tensorflow-serving-api", "grpcio-tools"}.isdisjoint(locked)


class TestDockerfile:
    def test_installs_the_lock_only_as_hashed_wheels(self):
        runs = [args for word, args in instructions(DOCKERFILE) if word == "RUN"]
        installs = [r for r in runs if "pip install" in r]
        assert len(installs) == 1
        for flag in ("--require-hashes", "--no-deps", "--only-binary=:all:",
                     "-r /tmp/requirements.lock"):
            assert flag in installs[0]
        assert ("COPY", "requirements.lock /tmp/requirements.lock") in instructions(DOCKERFILE)

    def test_final_image_holds_proxy_only(self):
        """The final stage copies the dependencies' venv and proxy/: not tfgate_dev/, not
        tests/, not pyproject (nothing to build or install from the source tree)."""
        copies = [args for word, args in final_stage() if word == "COPY"]
        assert copies == ["--from=deps /opt/tfgate /opt/tfgate", "proxy /opt/tfgate/app/proxy"]
        assert "tfgate_dev" not in " ".join(args for _, args in final_stage() if _ != "RUN")
        ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                  if line.strip() and not line.startswith("#")]
        assert ignore[0] == "*"  # the build context is the lock and proxy/, nothing else
        assert [line for line in ignore if line.startswith("!")] == [
            "!requirements.lock", "!proxy/"]

    def test_runs_as_the_chart_user(self):
        """A numeric non-root USER, the one the chart's pod securityContext runs as, so
        runAsNonRoot can verify it."""
        users = [args for word, args in final_stage() if word == "USER"]
        assert users == ["10001:10001"]
        assert "useradd --uid 10001 --gid 10001" in DOCKERFILE
        pod = (REPO / "helm" / "tfgate" / "templates" / "_helpers.tpl").read_text()
        assert "runAsUser: 10001" in pod and "runAsGroup: 10001" in pod

    def test_entrypoint_is_the_config_the_chart_mounts(self):
        stage = dict(final_stage())
        assert stage["ENTRYPOINT"] == '["tfgate"]'
        assert stage["CMD"] == '["serve", "--config", "/etc/tfgate/config/tfgate.yaml"]'
        assert VALUES["image"]["repository"] == "tfgate"

    def test_bytecode_compiled_at_build_time(self):
        """A read-only root filesystem cannot take .pyc files at run time."""
        stage = final_stage()
        assert any(w == "RUN" and "compileall" in a for w, a in stage)
        env = " ".join(a for w, a in stage if w == "ENV")
        assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONPATH=/opt/tfgate/app" in env
