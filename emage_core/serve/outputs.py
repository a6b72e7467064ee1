"""Where a server keeps request outputs, and how long: instance folders, retention sweeps, path scrubbing.

A server (the app) owns one *instance folder* under a base folder, named after its process id. Inside
it go the request folders and any cache the server controls (the app puts Gradio's file cache there).
A starting server removes the instance folders of servers that are no longer running, so a crash or a
``kill -9`` leaves nothing behind for long. `Sweeper` removes everything older than the retention time
on a timer, whether or not new requests arrive.

Messages for users must never show server paths: `scrub_paths` replaces every absolute path in a text
with its last component (``/tmp/x/y/ref.npz`` -> ``ref.npz``).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

INSTANCE_PREFIX = "run-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def claim_instance(base: str | os.PathLike) -> Path:
    """This process's instance folder under ``base`` (created), after removing dead instances' folders."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob(f"{INSTANCE_PREFIX}*"):
        try:
            pid = int(old.name[len(INSTANCE_PREFIX):])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            logger.info("removing %s, left by a server that is no longer running", old)
            shutil.rmtree(old, ignore_errors=True)
    mine = base / f"{INSTANCE_PREFIX}{os.getpid()}"
    mine.mkdir(exist_ok=True)
    return mine


def remove_older_than(folder: str | os.PathLike, max_age_s: float, *, now: float | None = None,
                      keep=None) -> int:
    """Remove the entries of ``folder`` (files or whole sub-folders) last modified over ``max_age_s`` ago.

    A sub-folder's age is that of its newest entry, so a folder still being written is kept; so is any
    entry ``keep(path)`` says is in use (a request still waiting or running). Returns how many went.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    now = time.time() if now is None else now
    removed = 0
    for entry in folder.iterdir():
        if keep is not None and keep(entry):
            continue
        try:
            newest = entry.lstat().st_mtime
            if entry.is_dir() and not entry.is_symlink():
                for sub in entry.rglob("*"):
                    newest = max(newest, sub.lstat().st_mtime)
        except FileNotFoundError:  # removed meanwhile
            continue
        if now - newest > max_age_s:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
    return removed


class Sweeper:
    """Removes what is older than ``max_age_s`` from ``folders`` every ``every_s`` seconds, in a thread."""

    def __init__(self, folders: list[Path], max_age_s: float, every_s: float | None = None, keep=None):
        self.folders = list(folders)
        self.keep = keep  # keep(path) -> True for entries in use
        self.max_age_s = max_age_s
        self.every_s = every_s if every_s is not None else min(60.0, max(1.0, max_age_s / 4))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emage-sweeper", daemon=True)

    def start(self) -> "Sweeper":
        self._thread.start()
        return self

    def sweep(self) -> int:
        return sum(remove_older_than(f, self.max_age_s, keep=self.keep) for f in self.folders)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.sweep()
            except Exception:  # keep sweeping whatever one pass met
                logger.exception("retention sweep failed")

    def stop(self) -> None:
        self._stop.set()


# An absolute POSIX path (two or more components) or a Windows drive path; keeps the last component.
_PATH = re.compile(r"(?<![\w.:/~-])(?:[A-Za-z]:\\|/)(?:[^\s'\"/\\:,;()\[\]]+[/\\])+([^\s'\"/\\:,;()\[\]]*)")


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path replaced by its last component (the file's own name)."""
    return _PATH.sub(lambda m: m.group(1) or "<folder>", text)
