"""Checkpoint finding and reading (`emage_core.models.hub`), all offline.

Most tests build tiny checkpoints themselves. The Hub is played by a Hub cache laid out by hand,
by a small HTTP server on 127.0.0.1 that answers the few Hub API calls a download makes, by a
closed port, and by a server that never answers. ``huggingface_hub`` reads its environment
variables once at import, so in-process tests patch ``huggingface_hub.constants`` (and set the
variables too); one test runs a fresh interpreter to check the variables themselves work.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import load_file, save_file

from emage_core.models import hub
from emage_core.models.hub import (
    DEFAULT_REPO_ID,
    SUBMODELS,
    WeightsError,
    default_repo_id,
    load_checkpoint,
    load_component,
    resolve_source,
)

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "reference" / "emage" / "golden"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
COMPONENTS = ["", *(f"emage_vq/{name}" for name in SUBMODELS)]  # "" = the audio model at the root


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def golden() -> Path:
    if not GOLDEN.is_dir():
        pytest.skip(f"needs the reduced reference checkpoint {GOLDEN} (shared test data); absent here")
    return GOLDEN


def _layout_files(root: Path) -> list[str]:
    """Relative paths of the Hub-layout files under root (not golden's .npz/.json test data)."""
    names = ("config.json", "model.safetensors", "pytorch_model.bin")
    return [f"{sub}/{n}".lstrip("/") for sub in COMPONENTS for n in names if (root / sub / n).is_file()]


def _copy_layout(src: Path, dst: Path) -> Path:
    for rel in _layout_files(src):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)
    return dst


def _tiny_checkpoint(root: Path, fmt: str = "safetensors") -> Path:
    """A checkpoint in the Hub layout with one small tensor per component."""
    for i, sub in enumerate(COMPONENTS):
        d = root / sub
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps({"model_type": "tiny", "index": i}))
        tensors = {"layer.weight": torch.full((2, 3), float(i)), "layer.bias": torch.arange(3.0) + i}
        if fmt == "safetensors":
            save_file(tensors, d / "model.safetensors")
        else:
            torch.save(tensors, d / "pytorch_model.bin")
    return root


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class NotATensor:
    """A custom class: pickled into a .bin, weights_only loading must refuse it."""


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """An empty Hub cache in tmp_path, online, with a closed loopback port as the Hub.

    Returns a function that points the Hub somewhere else. Patches the environment and
    huggingface_hub's import-time constants; monkeypatch undoes both after the test.
    """
    cache = tmp_path / "hf_cache"

    def set_endpoint(url: str) -> None:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setattr(constants, "ENDPOINT", url)
        # File URLs come from a template built from HF_ENDPOINT at import.
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("EMAGE_REPO_ID", raising=False)
    set_endpoint("http://127.0.0.1:9")  # discard port: nothing listens, connections are refused at once
    set_endpoint.cache = cache
    return set_endpoint


def _set_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _hand_made_cache(cache: Path, repo_id: str, files_from: Path) -> Path:
    """Lay out a Hub cache as huggingface_hub writes it: blobs, refs/main, symlinked snapshot."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / COMMIT
    (repo_dir / "blobs").mkdir(parents=True)
    for rel in _layout_files(files_from):
        data = (files_from / rel).read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)  # no trailing newline, as huggingface_hub writes it
    return snapshot


def _fake_hub(repo_id: str, commit: str, files: dict[str, bytes]):
    """A loopback HTTP server answering the Hub API calls snapshot_download makes for one repo."""
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _reply(self, body: bytes, headers: dict[str, str] | None = None, code: int = 200) -> None:
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            path = unquote(urlsplit(self.path).path)
            requests.append(f"{self.command} {path}")
            as_json = {"Content-Type": "application/json"}
            if path == f"/api/models/{repo_id}" or path.startswith(f"/api/models/{repo_id}/revision/"):
                info = {"id": repo_id, "sha": commit, "siblings": [{"rfilename": f} for f in files]}
                return self._reply(json.dumps(info).encode(), as_json)
            if path.startswith(f"/api/models/{repo_id}/tree/"):
                tree = [{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                        for f, b in files.items()]
                return self._reply(json.dumps(tree).encode(), as_json)
            prefix = f"/{repo_id}/resolve/{commit}/"
            if path.startswith(prefix) and path[len(prefix):] in files:
                body = files[path[len(prefix):]]
                return self._reply(body, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha1(body).hexdigest()}"'})
            return self._reply(b'{"error": "not found"}', {**as_json, "X-Error-Code": "EntryNotFound"}, 404)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, requests


# --- local folders -----------------------------------------------------------------------------


def test_golden_copy_loads_with_hashes(golden, tmp_path):
    folder = _copy_layout(golden, tmp_path / "ckpt")
    ckpt = load_checkpoint(folder)

    assert ckpt.resolved == hub.ResolvedSource(folder=folder.resolve(), source=str(folder), kind="local")
    assert set(ckpt.parts) == set(SUBMODELS)
    assert ckpt.audio.config["model_type"] == "emage_audio"
    assert all(part.state_dict for part in ckpt.parts.values())

    prov = ckpt.provenance()
    assert json.loads(json.dumps(prov)) == prov
    assert (prov["source"], prov["kind"], prov["revision"]) == (str(folder), "local", None)
    assert sorted(prov["files"]) == sorted(_layout_files(golden)) and len(prov["files"]) == 12
    summary = json.loads((golden / "golden_summary.json").read_text())["files"]
    for rel, digest in prov["files"].items():
        assert digest == _sha256(folder / rel) == summary[rel]["sha256"]


def test_bin_copy_loads_identically(golden, tmp_path):
    as_bin = tmp_path / "bin"
    for sub in COMPONENTS:
        (as_bin / sub).mkdir(parents=True)
        shutil.copyfile(golden / sub / "config.json", as_bin / sub / "config.json")
        torch.save(load_file(golden / sub / "model.safetensors"), as_bin / sub / "pytorch_model.bin")

    ref, ckpt = load_checkpoint(golden), load_checkpoint(as_bin)
    for name in ["audio", *SUBMODELS]:
        a = ref.audio if name == "audio" else ref.parts[name]
        b = ckpt.audio if name == "audio" else ckpt.parts[name]
        assert a.config == b.config and a.state_dict.keys() == b.state_dict.keys()
        for key, tensor in a.state_dict.items():
            assert torch.equal(tensor, b.state_dict[key]) and tensor.dtype == b.state_dict[key].dtype
    assert "emage_vq/face/pytorch_model.bin" in ckpt.provenance()["files"]


def test_safetensors_preferred_over_bin(tmp_path):
    root = _tiny_checkpoint(tmp_path / "c")
    torch.save({"layer.weight": torch.zeros(1)}, root / "pytorch_model.bin")  # a different twin
    comp = load_component(root)
    assert torch.equal(comp.state_dict["layer.weight"], torch.zeros(2, 3))
    assert sorted(comp.files) == ["config.json", "model.safetensors"]
    part = load_component(root, "emage_vq/hands")
    assert sorted(part.files) == ["emage_vq/hands/config.json", "emage_vq/hands/model.safetensors"]
    assert part.files["emage_vq/hands/model.safetensors"] == _sha256(root / "emage_vq/hands/model.safetensors")


def test_bad_sources_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError, match="neither an existing folder nor a Hub repo id"):
        resolve_source("no/such/folder")
    with pytest.raises(WeightsError, match="neither an existing folder"):
        resolve_source(tmp_path / "owner" / "name")  # a Path is never taken for a repo id
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(WeightsError, match="is a file"):
        resolve_source("file.txt")


def test_default_repo_id_follows_env(monkeypatch):
    monkeypatch.delenv("EMAGE_REPO_ID", raising=False)
    assert default_repo_id() == DEFAULT_REPO_ID == "H-Liu1997/emage_audio"
    monkeypatch.setenv("EMAGE_REPO_ID", "someone/elsewhere")
    assert default_repo_id() == "someone/elsewhere"


def test_default_source_is_the_bundled_checkpoint_unless_a_repo_is_set(monkeypatch, tmp_path):
    """source=None: $EMAGE_REPO_ID when set, else the checkpoint inside the package (offline)."""
    monkeypatch.delenv("EMAGE_REPO_ID", raising=False)
    assert hub.default_source() == hub.BUNDLED_CHECKPOINT
    assert (hub.BUNDLED_CHECKPOINT / "config.json").is_file()
    resolved = resolve_source()
    assert (resolved.kind, resolved.folder) == ("local", hub.BUNDLED_CHECKPOINT)
    monkeypatch.setenv("EMAGE_REPO_ID", "someone/elsewhere")
    assert hub.default_source() == "someone/elsewhere"
    monkeypatch.setenv("EMAGE_REPO_ID", "")  # empty counts as unset
    assert hub.default_source() == hub.BUNDLED_CHECKPOINT
    monkeypatch.setattr(hub, "BUNDLED_CHECKPOINT", tmp_path / "stripped")  # a package without it
    assert hub.default_source() == DEFAULT_REPO_ID


# --- broken files: WeightsError naming the file -------------------------------------------------


def _break_missing_config(d: Path) -> Path:
    (d / "config.json").unlink()
    return d / "config.json"


def _break_missing_weights(d: Path) -> Path:
    (d / "model.safetensors").unlink()
    return d


def _break_bad_json(d: Path) -> Path:
    (d / "config.json").write_text('{"hidden_size": 128,')
    return d / "config.json"


def _break_json_not_object(d: Path) -> Path:
    (d / "config.json").write_text("[1, 2]")
    return d / "config.json"


def _break_truncated_safetensors(d: Path) -> Path:
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    return d / "model.safetensors"


def _break_truncated_bin(d: Path) -> Path:
    (d / "model.safetensors").unlink()
    torch.save({"w": torch.randn(64, 64)}, d / "pytorch_model.bin")
    data = (d / "pytorch_model.bin").read_bytes()
    (d / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    return d / "pytorch_model.bin"


def _break_pickled_object(d: Path) -> Path:
    (d / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(2), "extra": NotATensor()}, d / "pytorch_model.bin")
    return d / "pytorch_model.bin"


def _break_nested_bin(d: Path) -> Path:
    (d / "model.safetensors").unlink()
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, d / "pytorch_model.bin")
    return d / "pytorch_model.bin"


@pytest.mark.parametrize("break_it", [
    _break_missing_config, _break_missing_weights, _break_bad_json, _break_json_not_object,
    _break_truncated_safetensors, _break_truncated_bin, _break_pickled_object, _break_nested_bin,
], ids=lambda f: f.__name__.removeprefix("_break_"))
@pytest.mark.parametrize("sub", ["", "emage_vq/lower"], ids=["root", "lower"])
def test_broken_files_raise_weights_error_naming_them(tmp_path, break_it, sub):
    root = _tiny_checkpoint(tmp_path / "c")
    culprit = break_it(root / sub)
    with pytest.raises(WeightsError) as info:
        load_checkpoint(root)
    assert str(culprit.resolve()) in str(info.value)


# --- the Hub and its cache ---------------------------------------------------------------------


def test_hand_made_cache_offline(hub_env, tmp_path, monkeypatch):
    _set_offline(monkeypatch)
    snapshot = _hand_made_cache(hub_env.cache, "owner/name", _tiny_checkpoint(tmp_path / "src"))

    resolved = resolve_source("owner/name")
    assert resolved == hub.ResolvedSource(folder=snapshot, source="owner/name", kind="hub", revision=COMMIT)
    assert resolve_source("owner/name", revision=COMMIT).folder == snapshot

    monkeypatch.setenv("EMAGE_REPO_ID", "owner/name")
    ckpt = load_checkpoint()  # source=None: the EMAGE_REPO_ID repo
    prov = ckpt.provenance()
    assert (prov["source"], prov["kind"], prov["revision"]) == ("owner/name", "hub", COMMIT)
    assert prov["files"]["emage_vq/global/model.safetensors"] == _sha256(snapshot / "emage_vq/global/model.safetensors")
    assert torch.equal(ckpt.parts["upper"].state_dict["layer.bias"], torch.arange(3.0) + 2)

    # The snapshot folder given as a path is a local source that still knows its commit.
    local = resolve_source(snapshot)
    assert (local.kind, local.revision, local.folder) == ("local", COMMIT, snapshot)


def test_offline_with_empty_cache_fails(hub_env, monkeypatch):
    _set_offline(monkeypatch)
    with pytest.raises(WeightsError) as info:
        resolve_source("owner/name")
    message = str(info.value)
    assert "'owner/name'" in message and "'main'" in message and "offline mode" in message
    assert str(hub_env.cache) in message and "local folder" in message


def test_unreachable_hub_without_cache_fails_fast(hub_env):
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        resolve_source("owner/name", revision="v1.0")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "'owner/name'" in message and "'v1.0'" in message and "ConnectError" in message
    assert "HF_HUB_OFFLINE=1" in message and "local folder" in message


def test_unreachable_hub_falls_back_to_cache(hub_env, tmp_path):
    snapshot = _hand_made_cache(hub_env.cache, "owner/name", _tiny_checkpoint(tmp_path / "src"))
    resolved = resolve_source("owner/name")
    assert (resolved.folder, resolved.revision) == (snapshot, COMMIT)


def test_silent_hub_times_out(hub_env, monkeypatch):
    """A Hub that accepts connections and never answers must not hang the download."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes handshakes; nobody ever reads or answers
    try:
        hub_env(f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)
        outcome: list[BaseException] = []

        def attempt() -> None:
            try:
                resolve_source("owner/name")
            except BaseException as err:  # noqa: BLE001 - handed to the test thread
                outcome.append(err)

        # In a thread, so that a regression fails this test instead of hanging the suite.
        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        # 1 s for our request, plus up to 3 s once per process for huggingface_hub's own first call.
        worker.join(8)
        assert not worker.is_alive(), "resolve_source hung on a Hub that never answers"
        assert isinstance(outcome[0], WeightsError) and "Timeout" in str(outcome[0])
    finally:
        silent.close()


def test_download_from_local_fake_hub_then_offline(hub_env, tmp_path, monkeypatch):
    src = _tiny_checkpoint(tmp_path / "src")
    files = {rel: (src / rel).read_bytes() for rel in _layout_files(src)}
    files["pytorch_model.bin"] = b"a 556 MB twin we must not download"
    files["README.md"] = b"not part of the layout"
    server, requests = _fake_hub("owner/name", COMMIT, files)
    try:
        hub_env(f"http://127.0.0.1:{server.server_port}")
        ckpt = load_checkpoint("owner/name")
    finally:
        server.shutdown()
        server.server_close()

    folder = ckpt.resolved.folder
    assert folder == hub_env.cache.resolve() / "models--owner--name" / "snapshots" / COMMIT
    assert ckpt.resolved.revision == COMMIT and ckpt.resolved.kind == "hub"
    assert not (folder / "pytorch_model.bin").exists() and not (folder / "README.md").exists()
    assert not any("pytorch_model.bin" in r or "README" in r for r in requests if "/resolve/" in r)
    assert sorted(ckpt.provenance()["files"]) == sorted(_layout_files(src))

    # Later, without the Hub: the same snapshot comes from the cache, complete by its own listing.
    _set_offline(monkeypatch)
    assert resolve_source("owner/name") == ckpt.resolved


def test_env_variables_work_in_a_fresh_process(tmp_path):
    """HF_ENDPOINT / HF_HUB_CACHE as users set them: an unreachable Hub fails quickly and clearly."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "EMAGE_"))}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(tmp_path / "cache"),
               HF_HOME=str(tmp_path / "hf_home"), PYTHONPATH=str(REPO))
    code = (
        "from emage_core.models.hub import WeightsError, load_checkpoint\n"
        "try:\n    load_checkpoint('owner/name')\n"
        "except WeightsError as err:\n    print('WeightsError:', err)\n"
    )
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert time.monotonic() - start < 20
    assert out.returncode == 0, out.stderr
    assert "WeightsError: Could not get checkpoint 'owner/name'" in out.stdout
    assert str(tmp_path / "cache") in out.stdout
