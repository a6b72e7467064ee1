"""Motions to videos: `render_motion` (one clip) and `render_grid` (1-4 clips side by side, optional
labels, every cell also written as its own mp4, in one rendering pass), with the mesh renderer or the
instant stick figure (``renderer="stick"``). One camera per clip (`render.camera`): a moving camera
would make the body look jittery.

Every body (``anny``, ``mannequin``, ``smplx``) is posed on SMPL-X's skeleton for each motion's betas,
and the floor lies where SMPL-X's soles stand under the motions' translations (`camera.motion_floor`),
never moved to meet the mesh.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..motion import smplx_skeleton
from .camera import check_view, clip_camera, motion_floor, view_region
from .mesh import DEFAULT_SIZE, MeshRenderer
from .video import Progress, VideoWriter

__all__ = ["GridResult", "grid_shape", "compose_grid", "draw_label", "label_box", "motion_frames", "body_name",
           "render_motion", "render_grid"]


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) of the side-by-side layout for ``n`` clips: 1x1, 1x2, 1x3 or 2x2."""
    layouts = {1: (1, 1), 2: (1, 2), 3: (1, 3), 4: (2, 2)}
    if n not in layouts:
        raise ValueError(f"a grid shows 1 to 4 motions, got {n}")
    return layouts[n]


def _label_font(height: int):
    from PIL import ImageFont

    size = max(10, height // 22)
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: scalable built-in font
    except TypeError:
        return ImageFont.load_default()


def label_box(text: str, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixel box a label covers in a cell of this size (top-left corner)."""
    from PIL import Image, ImageDraw

    font = _label_font(height)
    pad = max(3, height // 80)
    l, t, r, b = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    x0 = y0 = pad
    return x0, y0, min(width, x0 + (r - l) + 2 * pad), min(height, y0 + (b - t) + 2 * pad)


def draw_label(frame: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in a dark box at the top-left of (H, W, 3) uint8 ``frame``, in place.

    Only pixels inside `label_box` change.
    """
    from PIL import Image, ImageDraw

    h, w = frame.shape[:2]
    x0, y0, x1, y1 = label_box(text, w, h)
    if x1 <= x0 or y1 <= y0:
        return frame
    font = _label_font(h)
    pad = max(3, h // 80)
    patch = Image.fromarray(frame[y0:y1, x0:x1])
    draw = ImageDraw.Draw(patch)
    l, t, _, _ = draw.textbbox((0, 0), text, font=font)
    # Darken the patch (a translucent box keeps the picture readable), then write on it.
    dark = (np.asarray(patch, np.uint16) * 2 // 7 + 20).astype(np.uint8)
    patch = Image.fromarray(dark)
    ImageDraw.Draw(patch).text((pad - l, pad - t), text, font=font, fill=(255, 255, 255))
    frame[y0:y1, x0:x1] = np.asarray(patch)
    return frame


def compose_grid(cells: Sequence[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """Place 1-4 equal (h, w, 3) cell frames in the `grid_shape` layout -> (rows*h, cols*w, 3).

    A 3-cell grid is one row; in a 2x2 grid cells fill row by row. ``out`` reuses a buffer.
    """
    rows, cols = grid_shape(len(cells))
    h, w = cells[0].shape[:2]
    if out is None:
        out = np.empty((rows * h, cols * w, 3), np.uint8)
    for k, cell in enumerate(cells):
        r, c = divmod(k, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = cell
    return out


# ====================================================================== motions to videos

@dataclass(frozen=True)
class GridResult:
    grid_path: Path
    cell_paths: list[Path]  # one mp4 per motion, same frames as its grid cell


def _body(body):
    """A body object as given, or the body called ``body`` (``anny``, ``mannequin``, ``smplx``; None: the
    default, `emage_core.body.default_body`), loaded once per process."""
    if body is None or isinstance(body, str):
        from ..body import load_body

        return load_body(body)
    return body


def body_name(body) -> str:
    """The name of the body a render uses (``anny``, ``mannequin``, ``smplx``), for outputs' metadata."""
    return getattr(_body(body), "name", type(body).__name__)


def _cell_size(size: int | tuple[int, int]) -> tuple[int, int]:
    w, h = (size, size) if isinstance(size, (int, np.integer)) else size
    w, h = int(w), int(h)
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise ValueError(f"cell size must be even and at least 16 pixels, got {w}x{h}")
    return w, h


def _check_motions(motions: Sequence) -> None:
    grid_shape(len(motions))  # 1..4
    lengths = {m.n_frames for m in motions}
    if len(lengths) != 1:
        raise ValueError("motions shown side by side must have the same number of frames, got "
                         + ", ".join(str(m.n_frames) for m in motions))
    fps = {float(m.fps) for m in motions}
    if len(fps) != 1:
        raise ValueError(f"motions shown side by side must share one fps, got {sorted(fps)}")
    if motions[0].n_frames == 0:
        raise ValueError("cannot render motions with no frames")


def _keep_translation(keep_translation: bool | None, view: str) -> bool:
    """Default: keep it in the full view; remove it in close-ups, which a walking speaker would
    leave (the camera never moves)."""
    return view == "full" if keep_translation is None else bool(keep_translation)


def _trans(motion, keep_translation: bool, floor: float | None = None) -> np.ndarray:
    """(T, 3) root translation to render: as is, or with the ground-plane drift removed; lifted so the
    clip's own floor (`smplx_skeleton.clip_floor`) is ``floor``, the one all cells share.

    Without translation the body stays where it starts horizontally; the vertical part is kept
    so crouches and bounces still look right and the feet stay on the floor. The lift matters when a
    clip whose translation is at rest (pelvis at the origin) stands beside a translated one.
    """
    t = motion.trans.copy()
    if not keep_translation:
        t[:, [0, 2]] = motion.trans[:1, [0, 2]]
    if floor is not None:
        t[:, 1] += floor - smplx_skeleton.clip_floor(motion.trans, motion.betas)
    return t


_CHUNK = 32  # frames posed at once: fast batched skinning, bounded memory


def _posed_chunks(body, motion, trans: np.ndarray, stride: int = 1) -> Iterator[np.ndarray]:
    """(t, V, 3) float32 vertex chunks of every ``stride``-th frame, in order, posed on the SMPL-X
    skeleton of the motion's betas."""
    idx = np.arange(0, motion.n_frames, stride)
    for s in range(0, len(idx), _CHUNK):
        i = idx[s:s + _CHUNK]
        yield np.asarray(body.vertices(motion.poses[i], trans[i], expressions=motion.expressions[i],
                                       betas=motion.betas), np.float32)


def motion_frames(motions: Sequence, *, view: str = "full", size: int | tuple[int, int] = DEFAULT_SIZE,
                  renderer: str = "mesh", body=None, msaa: int = 0,
                  keep_translation: bool | None = None) -> list[Iterator[np.ndarray]]:
    """One iterator of (h, w, 3) uint8 frames per motion, framed alike (what `render_grid` encodes).

    All clips share one camera, fitted to the union of their extents, so they appear at the same
    scale and compare fairly, and one floor (`camera.motion_floor`). Frames are produced on demand:
    pull them in lockstep (frame t of every clip, then t + 1) or one clip after the other. Options as
    in `render_grid`.
    """
    _check_motions(motions)
    view = check_view(view)
    keep = _keep_translation(keep_translation, view)
    w, h = _cell_size(size)
    floor = motion_floor(motions)
    if renderer == "mesh":
        return _mesh_frames(motions, body, view, (w, h), msaa, keep, floor)
    if renderer == "stick":
        return _stick_frames(motions, view, (w, h), keep, floor)
    raise ValueError(f"renderer must be 'mesh' or 'stick', got {renderer!r}")


def _mesh_frames(motions, body, view, size, msaa, keep_translation, floor) -> list[Iterator[np.ndarray]]:
    body = _body(body)
    w, h = size
    renderer = MeshRenderer(w, h, view=view, msaa=msaa)
    rest_joints = getattr(body, "rest_joints", None)
    if rest_joints is None:
        rest_joints = body.joints(np.zeros((1, 55, 3), np.float32), np.zeros((1, 3), np.float32))[0]
    region = view_region(body.rest_vertices, rest_joints, view)
    trans = [_trans(m, keep_translation, floor) for m in motions]
    # The extent is measured on every 3rd frame (motion between them is within the margin).
    samples = (chunk for m, t in zip(motions, trans) for chunk in _posed_chunks(body, m, t, stride=3))
    renderer.set_camera(clip_camera(samples, view, w / h, region, floor_y=floor))
    faces = np.asarray(body.faces)

    def frames(m, t):
        for chunk in _posed_chunks(body, m, t):
            for v in chunk:
                yield renderer.render_frame(v, faces)

    return [frames(m, t) for m, t in zip(motions, trans)]


def _stick_frames(motions, view, size, keep_translation, floor) -> list[Iterator[np.ndarray]]:
    from dataclasses import replace

    from ..motion.kinematics import joint_positions
    from .stick import StickRenderer

    joints = [joint_positions(replace(m, trans=_trans(m, keep_translation, floor))) for m in motions]
    renderer = StickRenderer(*size, view=view).fit(np.concatenate(joints), floor_y=floor)
    return [(renderer.render_frame(j) for j in js) for js in joints]


def render_grid(motions: Sequence, path: str | os.PathLike, *, audio=None, labels: Sequence[str] | None = None,
                show_labels: bool = True, view: str = "full", size: int | tuple[int, int] = DEFAULT_SIZE,
                renderer: str = "mesh", body=None, msaa: int = 0, keep_translation: bool | None = None,
                cell_paths: Sequence[str | os.PathLike] | None = None, write_cells: bool = True,
                progress: Progress | None = None, crf: int = 20, preset: str = "veryfast") -> GridResult:
    """Render 1-4 equally long motions side by side into one mp4, and each also into its own mp4.

    Args:
        motions: 1 to 4 `Motion` clips with the same frame count and fps.
        path: the grid ``.mp4``. Layout by count: 1x1, 1x2, 1x3, 2x2; each cell is ``size``.
        audio: speech for every file: a path, or a (N,) float32 array at 16 kHz; cut or padded
            to the clip length.
        labels: one text per motion, drawn top-left in its cell (and in its own file).
        show_labels: False draws no text at all (blind comparisons), whatever ``labels`` says.
        view: ``full``, ``upper`` or ``face``.
        size: cell size in pixels, an int (square) or (width, height); even numbers.
        renderer: ``mesh`` (the body, shaded) or ``stick`` (2D skeleton preview, instant).
        body: the body to pose: ``anny`` (the free body), ``mannequin`` (the wooden mannequin),
            ``smplx`` (the official mesh, when ``$EMAGE_SMPLX_MODEL`` names its files), or a body
            object; None: `emage_core.body.default_body`. Every body is posed on SMPL-X's skeleton
            for each motion's betas.
        msaa: anti-aliasing samples for ``mesh`` (0 = off, fastest; 4 = smooth, ~3x slower).
        keep_translation: False removes the ground-plane drift of the root (see `_trans`);
            None (default): kept in the ``full`` view, removed in ``upper`` and ``face``.
        cell_paths: where the per-motion files go (default ``<grid>_cell1.mp4`` ...); with one
            motion the grid file is the cell file.
        write_cells: False skips the per-motion files.
        progress: ``progress(fraction, message)``, every 15 frames.

    Every cell frame is rendered once and sent both to its own encoder and into the grid frame.
    """
    _check_motions(motions)
    w, h = _cell_size(size)
    n, T, fps = len(motions), motions[0].n_frames, float(motions[0].fps)
    if labels is not None and len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} motions")
    path = Path(path)
    if n == 1 or not write_cells:
        cells_out = [path] if n == 1 else []
    elif cell_paths is not None:
        if len(cell_paths) != n:
            raise ValueError(f"got {len(cell_paths)} cell paths for {n} motions")
        cells_out = [Path(p) for p in cell_paths]
    else:
        cells_out = [path.with_name(f"{path.stem}_cell{k + 1}{path.suffix or '.mp4'}") for k in range(n)]

    if progress:
        progress(0.0, "preparing")
    sources = motion_frames(motions, view=view, size=(w, h), renderer=renderer, body=body, msaa=msaa,
                            keep_translation=keep_translation)
    texts = list(labels) if (labels is not None and show_labels) else [None] * n
    audio_samples = _load_audio_once(audio)

    rows, cols = grid_shape(n)
    writers: list[VideoWriter] = []
    try:
        kw = dict(fps=fps, audio=audio_samples, crf=crf, preset=preset)
        grid_writer = None if n == 1 else VideoWriter(path, cols * w, rows * h, **kw)
        writers += [grid_writer] if grid_writer else []
        cell_writers = [VideoWriter(p, w, h, **kw) for p in cells_out]
        writers += cell_writers
        grid = np.empty((rows * h, cols * w, 3), np.uint8)
        for t in range(T):
            cells = []
            for k, src in enumerate(sources):
                frame = next(src)
                if texts[k]:
                    frame = draw_label(frame, texts[k])
                if k < len(cell_writers):
                    cell_writers[k].write(frame)
                cells.append(frame)
            if grid_writer is not None:
                grid_writer.write(compose_grid(cells, out=grid))
            if progress and (t + 1) % 15 == 0:
                progress(0.98 * (t + 1) / T, f"rendered frame {t + 1}/{T}")
        if progress:
            progress(0.98, "finishing the video files")
        for wr in writers:
            wr.close()
    except BaseException:
        for wr in writers:
            wr.abort()
        raise
    if progress:
        progress(1.0, f"wrote {path.name}")
    return GridResult(grid_path=path, cell_paths=cells_out)


def _load_audio_once(audio):
    """Decode a speech file once for all the encoders of a grid (arrays pass through)."""
    if audio is None or isinstance(audio, np.ndarray):
        return audio
    from ..audio import load_audio

    return load_audio(audio, min_seconds=0.0)


def render_motion(motion, path: str | os.PathLike, *, audio=None, view: str = "full",
                  size: int | tuple[int, int] = DEFAULT_SIZE, body=None, label: str | None = None,
                  renderer: str = "mesh", msaa: int = 0, keep_translation: bool | None = None,
                  progress: Progress | None = None, **kw) -> Path:
    """Render one `Motion` to an mp4 (with speech if ``audio``). Options as `render_grid`."""
    return render_grid([motion], path, audio=audio, labels=None if label is None else [label],
                       view=view, size=size, renderer=renderer, body=body, msaa=msaa,
                       keep_translation=keep_translation, progress=progress, **kw).grid_path
