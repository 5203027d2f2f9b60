"""The MAP's manifests, Dockerfile and entry point agree with each other and with the MAP spec.

No Docker here: `make map && make map-test` build and run the real image. These checks keep
app.yaml, deploy/app.json, deploy/pkg.json, the Dockerfile, deploy/entrypoint.sh, apps/map and
README's packager command from drifting apart, and run apps/map's entry point on non-CT input.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from osteoscreen.models import MODEL_NAMES

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

# The layout and variables `monai-deploy package` (holoscan-cli 4.2.0) gives a MAP.
APP_ROOT = "/opt/holoscan/app"
MODEL_ROOT = "/opt/holoscan/models"
WORKDIR = "/var/holoscan"
APP_JSON_KEYS = {
    "apiVersion", "command", "environment", "input", "output", "readiness", "liveness",
    "sdk", "sdkVersion", "timeout", "version", "workingDirectory",
}  # fmt: skip
PKG_JSON_KEYS = {
    "apiVersion", "applicationRoot", "modelRoot", "models", "resources", "version", "platformConfig",
}  # fmt: skip
HOLOSCAN_VARS = {
    "HOLOSCAN_APPLICATION", "HOLOSCAN_INPUT_PATH", "HOLOSCAN_OUTPUT_PATH", "HOLOSCAN_WORKDIR",
    "HOLOSCAN_MODEL_PATH", "HOLOSCAN_CONFIG_PATH", "HOLOSCAN_APP_MANIFEST_PATH",
    "HOLOSCAN_PKG_MANIFEST_PATH", "HOLOSCAN_DOCS_PATH", "HOLOSCAN_LOGS_PATH",
}  # fmt: skip
QUANTITY = re.compile(r"^\d+(\.\d+)?(Mi|Gi)$")


def _simple_yaml(text: str) -> dict[str, Any]:
    """The subset of YAML app.yaml uses (nested mappings, scalars, flow lists), if PyYAML is absent."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for raw in text.splitlines():
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        while stack[-1][0] >= indent:
            stack.pop()
        value = value.strip()
        if not value:
            child: dict[str, Any] = {}
            stack[-1][1][key] = child
            stack.append((indent, child))
        elif value.startswith("["):
            stack[-1][1][key] = json.loads(value)
        else:
            stack[-1][1][key] = int(value) if value.isdigit() else value
    return root


def _app_yaml() -> dict[str, Any]:
    text = (REPO / "app.yaml").read_text()
    try:
        import yaml
    except ImportError:
        return _simple_yaml(text)
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    out = []
    for line in lines:
        instr, _, args = line.strip().partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, args in _dockerfile_instructions():
        if instr == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def _dockerfile_copies() -> dict[str, list[str]]:
    """Image path -> context sources of the COPY instructions (ARGs left as written).

    The ``files`` stage assembles the image's files under /out, which the release stage copies
    to / in one step; its destinations are given here as the image paths.
    """
    copies: dict[str, list[str]] = {}
    for instr, args in _dockerfile_instructions():
        if instr == "COPY" and not args.startswith("--from"):
            *sources, dest = args.split()
            if dest.startswith("/out/"):
                dest = dest[len("/out") :]
            copies.setdefault(dest.rstrip("/") or "/", []).extend(s.rstrip("/") for s in sources)
    return copies


@pytest.fixture(scope="module")
def app_json() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "app.json").read_text())
    return data


@pytest.fixture(scope="module")
def pkg_json() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "pkg.json").read_text())
    return data


def _project_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert match
    return match.group(1)


# ---------------------------------------------------------------------------------------------
# manifests


def test_app_json_has_the_spec_fields(app_json: dict[str, Any]) -> None:
    assert set(app_json) == APP_JSON_KEYS
    assert app_json["apiVersion"] == "1.0.0"
    # The packager writes the command as a JSON array inside a string.
    assert json.loads(app_json["command"]) == ["python3", APP_ROOT]
    assert set(app_json["environment"]) == HOLOSCAN_VARS
    assert app_json["workingDirectory"] == WORKDIR
    assert app_json["input"]["path"] == "input/" and app_json["output"]["path"] == "output/"
    assert app_json["sdk"] == "monai-deploy"
    assert isinstance(app_json["timeout"], int)


def test_pkg_json_has_the_spec_fields_and_every_model(pkg_json: dict[str, Any]) -> None:
    assert set(pkg_json) == PKG_JSON_KEYS
    assert pkg_json["apiVersion"] == "1.0.0"
    assert pkg_json["applicationRoot"] == APP_ROOT
    assert pkg_json["modelRoot"] == MODEL_ROOT
    assert pkg_json["models"] == {name: f"{MODEL_ROOT}/{name}" for name in MODEL_NAMES}
    assert pkg_json["platformConfig"] == "cpu"


def test_app_yaml_agrees_with_the_manifests(app_json: dict[str, Any], pkg_json: dict[str, Any]) -> None:
    cfg = _app_yaml()
    app, res = cfg["application"], cfg["resources"]
    assert app["title"].strip()
    assert str(app["version"]) == app_json["version"] == pkg_json["version"] == _project_version()
    assert app["inputFormats"] == app["input-formats"] == app_json["input"]["formats"]
    assert app["outputFormats"] == app["output-formats"] == app_json["output"]["formats"]
    assert res == pkg_json["resources"]
    assert set(res) == {"cpu", "memory", "gpu", "gpuMemory"}
    assert isinstance(res["cpu"], int) and res["cpu"] >= 1
    assert isinstance(res["gpu"], int) and res["gpu"] >= 0
    assert QUANTITY.match(str(res["memory"])), res["memory"]
    assert QUANTITY.match(str(res["gpuMemory"])), res["gpuMemory"]


# ---------------------------------------------------------------------------------------------
# Dockerfile, entry point, README


def test_dockerfile_sets_the_variables_app_json_declares(app_json: dict[str, Any]) -> None:
    env = _dockerfile_env()
    for key, value in app_json["environment"].items():
        expected = value if value.startswith("/") else f"{WORKDIR}/{value.rstrip('/')}"
        assert env[key].rstrip("/") == expected.rstrip("/"), key
    assert "cuda-lib" in env["LD_LIBRARY_PATH"]  # libcudart from the nvidia-cuda-runtime wheel


def test_dockerfile_layout_and_entry_point(app_json: dict[str, Any]) -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("ARG", "BASE_IMAGE=debian:bookworm-slim")
    assert any(i == "FROM" and a.startswith("${BASE_IMAGE}") for i, a in instructions)
    assert ("COPY", "--from=files /out/ /") in instructions
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in instructions
    copies = _dockerfile_copies()
    assert copies[APP_ROOT] == ["apps/map"]
    assert copies[MODEL_ROOT] == ["${MODELS_DIR}"]
    assert sorted(copies["/etc/holoscan"]) == ["deploy/app.json", "deploy/pkg.json"]
    assert copies[_dockerfile_env()["HOLOSCAN_CONFIG_PATH"]] == ["app.yaml"]
    users = [a for i, a in instructions if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    (entry,) = [a for i, a in instructions if i == "ENTRYPOINT"]
    (entry_path,) = json.loads(entry)
    assert copies[entry_path] == ["deploy/entrypoint.sh"]
    # The entry point raises the stack limit and runs app.json's command.
    script = (DEPLOY / "entrypoint.sh").read_text()
    assert "want=32768" in script and 'ulimit -s "$want"' in script
    assert 'exec python3 "${HOLOSCAN_APPLICATION:-/opt/holoscan/app}" "$@"' in script
    assert json.loads(app_json["command"]) == ["python3", APP_ROOT]
    assert os.access(DEPLOY / "entrypoint.sh", os.X_OK)
    assert (REPO / "apps/map/__main__.py").is_file() and (REPO / "apps/map/requirements.txt").is_file()


def test_dockerignore_lets_every_copied_file_in() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    sources = {s for srcs in _dockerfile_copies().values() for s in srcs if not s.startswith("$")}
    for src in sources:
        assert any(src == a or src.startswith(a + "/") for a in allowed), src
    for default in ("models", "deploy/extra", "build/map/models", "build/map/extra"):
        assert default in allowed


def test_readme_packager_command_matches_the_layout() -> None:
    readme = (REPO / "README.md").read_text()
    assert "## Package as a MAP" in readme
    section = readme.split("## Package as a MAP", 1)[1]
    # The packager command, however the venv's bin/ is spelled, with its continuation lines.
    start = section.index("monai-deploy package ")
    block = section[start:].split("```", 1)[0]
    argv = shlex.split(block.replace("\\\n", " "))
    assert argv[:2] == ["monai-deploy", "package"]
    assert argv[2] == "apps/map"  # the folder whose __main__.py becomes /opt/holoscan/app
    opts = dict(zip(argv[3::2], argv[4::2]))
    assert opts.get("--config") == "app.yaml"
    assert opts.get("--platform") == "x86_64"
    assert "--models" in opts and "--tag" in opts
    assert opts.get("--add") == "src"  # osteoscreen itself, on PYTHONPATH under /opt/holoscan/lib
    assert "holoscan-cli==4.2.0" in section
    assert "make map" in section and "make map-test" in section


# ---------------------------------------------------------------------------------------------
# the entry point itself


def _map_main() -> ModuleType:
    spec = importlib.util.spec_from_file_location("osteoscreen_map_main", REPO / "apps/map/__main__.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_preflight_names_a_missing_input_and_an_unwritable_output(tmp_path: Path) -> None:
    main = _map_main()
    assert "does not exist" in main._preflight(tmp_path / "nope", tmp_path / "out")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "not writable" in main._preflight(tmp_path, blocker / "out")
    assert main._preflight(tmp_path, tmp_path / "out") is None


def _stub_models(root: Path) -> Path:
    """Bundles that load (TorchScript identity) but would not screen anything."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated
        net = torch.jit.script(torch.nn.Identity())
    for name in MODEL_NAMES:
        (root / name / "configs").mkdir(parents=True)
        (root / name / "models").mkdir()
        (root / name / "configs" / "metadata.json").write_text(json.dumps({"version": "stub"}))
        (root / name / "configs" / "inference.json").write_text("{}")
        net.save(str(root / name / "models" / "model.ts"))
    return root


def test_map_entry_point_on_non_ct_input(tmp_path: Path) -> None:
    """apps/map with HOLOSCAN_* set, as the container runs it: exit 3, one line, summary.json."""
    inp = tmp_path / "input"
    inp.mkdir()
    (inp / "notes.txt").write_text("not DICOM")
    (inp / "DICOMDIR").write_bytes(b"\0" * 200)
    out = tmp_path / "output"
    env = {
        **os.environ,
        "HOLOSCAN_INPUT_PATH": str(inp),
        "HOLOSCAN_OUTPUT_PATH": str(out),
        "HOLOSCAN_MODEL_PATH": str(_stub_models(tmp_path / "models")),
        "PYTHONWARNINGS": "ignore",
    }
    proc = subprocess.run(
        ["bash", "-c", f'ulimit -s 32768 2>/dev/null; exec "{sys.executable}" apps/map/__main__.py'],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("osteoscreen: not screenable: "), last
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "not_screenable" and summary["reason"]
