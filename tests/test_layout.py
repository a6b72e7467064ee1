"""The product card: files that must exist and agree with each other."""
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from conftest import REPO


def _front_matter() -> dict:
    text = (REPO / "README.md").read_text()
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert m, "README.md must start with the YAML front matter Hugging Face Spaces reads"
    return yaml.safe_load(m.group(1))


def test_space_settings_agree_with_readme_front_matter():
    spaces = yaml.safe_load((REPO / "spaces.yaml").read_text())
    front = _front_matter()
    for key in ("sdk", "sdk_version", "app_file", "python_version", "suggested_hardware", "preload_from_hub"):
        assert key in spaces, key
        assert str(front.get(key)) == str(spaces[key]), f"{key}: README {front.get(key)!r} != spaces.yaml {spaces[key]!r}"
    assert (REPO / spaces["app_file"]).is_file()


def test_ci_runs_the_readme_test_command():
    lines = [l.strip() for l in (REPO / ".ci/run").read_text().splitlines()
             if l.strip() and not l.strip().startswith(("#", "set ", "cd "))]
    assert lines[-1] in (REPO / "README.md").read_text()


def test_core_imports_without_gradio():
    code = ("import sys, emage_core, emage_core.cli, emage_core.motion.beat2, emage_core.motion; "
            "assert 'gradio' not in sys.modules, 'emage_core pulled in gradio'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_app_starts_and_serves(tmp_path):
    port = 7900 + int(time.time()) % 90
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    assert r.status == 200 and "EMAGE Studio" in r.read().decode()
                    break
            except OSError:
                assert proc.poll() is None, f"app exited: {proc.stdout.read()}"
                assert time.time() < deadline, "app did not answer within 90 s"
                time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(10)


def test_space_and_install_script_share_one_package_list():
    """A Space installs packages.txt; scripts/install.sh reads the same file, so they cannot drift."""
    packages = [l.strip() for l in (REPO / "packages.txt").read_text().splitlines()
                if l.strip() and not l.startswith("#")]
    assert {"libegl1", "libegl-mesa0", "libgl1-mesa-dri"} <= set(packages)  # the EGL renderer's Mesa
    install = (REPO / "scripts" / "install.sh").read_text()
    assert "packages.txt" in install and not any(p in install for p in packages), "install.sh lists packages itself"


def test_publish_space_dry_run_lists_the_space_and_uploads_nothing(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "scripts/publish_space.py", "--repo-id", "someone/emage-studio",
                        "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    listed = {line.split()[1] for line in r.stdout.splitlines() if line.strip()[:1].isdigit() and "  " in line}
    for needed in ("app.py", "requirements.txt", "packages.txt", "README.md",
                   "emage_core/checkpoints/emage_studio_default/model.safetensors", "emage_core/assets/anny_body.npz"):
        assert needed in listed, needed
    assert not any(p.startswith(("tests/", "bench/", ".venv/", ".ci/")) for p in listed)
    big = [l for l in r.stdout.splitlines() if "model.safetensors" in l and "emage_vq" not in l][0]
    assert "LFS" in big  # the 22 MB checkpoint: upload_folder sends it through LFS
    assert "dry run: nothing uploaded" in r.stdout
    bad = subprocess.run([sys.executable, "scripts/publish_space.py", "--repo-id", "not a repo", "--dry-run"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a valid repo id" in bad.stderr


def test_pip_install_builds_a_package_with_its_data(tmp_path):
    """`pip install .` ships the bundled checkpoint, the baked body and the example speech."""
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    import zipfile

    (wheel,) = tmp_path.glob("emage_studio-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("emage_core/checkpoints/emage_studio_default/config.json",
                   "emage_core/checkpoints/emage_studio_default/model.safetensors",
                   "emage_core/checkpoints/emage_studio_default/emage_vq/hands/model.safetensors",
                   "emage_core/assets/anny_body.npz", "emage_core/assets/speech/hello.wav",
                   "emage_core/batch/__init__.py"):
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "ui/", "bench/")) for n in names)


# The pipeline's layers, bottom first: a module may import its own layer and the ones below, never above.
LAYERS = (
    {"motion", "audio", "assets", "files", "__init__"},  # data types, files, speech
    {"models"},  # each family's networks and checkpoint loading
    {"edit"},  # locks and explicit edits of motion (generation applies them)
    {"generate"},  # the interface, settings, registry, each family's generator
    {"body", "render", "export", "train", "metrics"},  # what is done with motion
    {"serve", "batch", "cli", "__main__"},  # the entry points
)


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    if not ((REPO / "emage_core" / top).is_dir() or (REPO / "emage_core" / f"{top}.py").is_file()):
        top = "__init__"  # a name defined in emage_core/__init__.py, e.g. __version__
    layer = next((i for i, names in enumerate(LAYERS) if top in names), None)
    assert layer is not None, f"emage_core.{top} has no layer in LAYERS: add it where it belongs"
    return layer


def test_layers_import_only_downwards():
    import ast

    package = REPO / "emage_core"
    problems = []
    for path in package.rglob("*.py"):
        rel = path.relative_to(REPO).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        pkg = module if rel.name == "__init__" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("emage_core")):
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                targets = [target] if target != "emage_core" else [f"emage_core.{a.name}" for a in node.names]
                for t in targets:
                    if t.startswith("emage_core") and _layer(t) > _layer(module):
                        problems.append(f"{module} imports {t}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.split(".")[0] == "gradio" for n in names):
                    problems.append(f"{module} imports gradio")
    assert not problems, "\n".join(sorted(problems))


def test_public_names_come_from_the_package():
    import emage_core

    for name in emage_core.__all__:
        assert getattr(emage_core, name) is not None, name
    assert emage_core.generator_for is __import__("emage_core.generate.registry", fromlist=["load"]).load
    with __import__("pytest").raises(AttributeError):
        emage_core.no_such_name
