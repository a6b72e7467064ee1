"""The bridge to Blender: .glb -> .fbx by running Blender headless (nothing else in EMAGE Studio needs it).

Blender is found as ``$EMAGE_BLENDER`` (a path to the executable) or ``blender`` on the PATH. Debian's
package is enough (``apt-get install blender python3-numpy``: its glTF add-on needs Debian's NumPy).
Blender runs with factory settings and a clean Python environment (no ``PYTHONPATH``, no user site), so
this process's virtual environment cannot leak into Blender's own Python. The script it runs is
``blender_fbx.py`` beside this module (it imports ``bpy`` and runs only inside Blender).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

__all__ = ["BLENDER_ENV", "BlenderMissing", "BlenderError", "find_blender", "have_blender", "require_blender",
           "run_blender", "glb_to_fbx", "FBX_SCRIPT"]

BLENDER_ENV = "EMAGE_BLENDER"
FBX_SCRIPT = Path(__file__).with_name("blender_fbx.py")
_TIMEOUT_S = 600.0


class BlenderMissing(RuntimeError):
    """No Blender executable here; the message says how to get one."""


class BlenderError(RuntimeError):
    """Blender ran but failed; the message holds the end of its output."""


def find_blender() -> str | None:
    """The Blender executable: ``$EMAGE_BLENDER`` if set (and executable), else ``blender`` on the PATH."""
    explicit = os.environ.get(BLENDER_ENV)
    if explicit:
        return shutil.which(explicit)
    return shutil.which("blender")


def have_blender() -> bool:
    return find_blender() is not None


def require_blender() -> str:
    """The Blender executable, or `BlenderMissing` saying how to install it."""
    found = find_blender()
    if found:
        return found
    where = (f"${BLENDER_ENV} is {os.environ[BLENDER_ENV]!r}, which is not an executable"
             if os.environ.get(BLENDER_ENV) else "no 'blender' executable on the PATH")
    raise BlenderMissing(
        f"FBX export converts through Blender, and there is none here ({where}). Install it: on Debian/Ubuntu "
        "'sudo apt-get install blender python3-numpy'; elsewhere from https://www.blender.org/download/, then put "
        f"'blender' on the PATH or set ${BLENDER_ENV} to the executable. .glb and .bvh exports need no Blender.")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def run_blender(script: str | os.PathLike, args: Sequence[str] = (), *, timeout: float = _TIMEOUT_S,
                blender: str | None = None) -> str:
    """Run ``script`` in headless Blender with ``args`` after ``--``; returns its output (stdout and stderr).

    Raises `BlenderMissing` without Blender, `BlenderError` when the script fails or runs past ``timeout`` s.
    """
    exe = blender or require_blender()
    cmd = [exe, "-b", "--factory-startup", "-noaudio", "--python-exit-code", "1", "--python", str(script),
           "--", *map(str, args)]
    try:
        done = subprocess.run(cmd, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BlenderError(f"Blender did not finish {Path(script).name} within {timeout:g} s") from None
    if done.returncode != 0:
        tail = "\n".join(done.stdout.strip().splitlines()[-15:])
        raise BlenderError(f"Blender failed running {Path(script).name} (exit code {done.returncode}):\n{tail}")
    return done.stdout


def glb_to_fbx(pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]], *, fps: float,
               timeout: float = _TIMEOUT_S, blender: str | None = None) -> list[Path]:
    """Convert each ``(glb, fbx)`` pair in one Blender run; returns the .fbx paths.

    ``fps``: the motion's frame rate (Blender keys the animation at ``time * fps``). The FBX holds the
    armature (bone names as in the .glb), the skinned mesh when the .glb has one, and the animation baked
    at every frame; Blender writes it Y up, -Z forward, in centimetres (FBX's usual units).
    """
    if not pairs:
        return []
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    args = [f"{fps:.9g}"]
    for glb, fbx in pairs:
        if not Path(glb).is_file():
            raise FileNotFoundError(f"{Path(glb).name}: no such .glb to convert")
        args += [str(Path(glb).resolve()), str(Path(fbx).resolve())]
    run_blender(FBX_SCRIPT, args, timeout=timeout, blender=blender)
    out = [Path(fbx) for _, fbx in pairs]
    missing = [p.name for p in out if not p.is_file()]
    if missing:
        raise BlenderError(f"Blender ran but wrote no {', '.join(missing)}")
    return out
