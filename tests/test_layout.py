"""The product card: files that must exist and agree with each other."""
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
    code = ("import sys, emage_core, emage_core.cli, emage_core.beat2, emage_core.motion; "
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
