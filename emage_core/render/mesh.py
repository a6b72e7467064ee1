"""Render motions as videos of the free body: headless, on any machine, faster than real time.

Layers, bottom up:

- The OpenGL context: ONE pyrender offscreen renderer per process on EGL (Mesa llvmpipe on a CPU,
  the NVIDIA driver on a GPU), created on first use and closed at exit (`close_renderer`).
- `Camera` / `fit_camera` / `clip_camera` (`emage_core.camera`): one camera for a whole clip, from
  the clip's extent (a moving camera would make the body look jittery), for the views ``full``,
  ``upper`` and ``face``.
- `MeshRenderer`: a scene with one body mesh, a floor grid and lights; each frame only the
  vertex buffer is rewritten in place (a new mesh per frame costs ~3x more).
- `render_motion` / `render_grid`: `Motion` -> mp4 with speech, 1 to 4 clips side by side with
  optional labels, every cell also written as its own mp4, in one rendering pass. Pass
  ``renderer="stick"`` for the instant 2D stick-figure preview (`emage_core.preview`).

Measured on 2 CPU cores (llvmpipe), 512x512, body of 13,718 vertices: see
``bench/bench_render.py``.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

# Must be set before PyOpenGL is first imported anywhere in the process: it picks its platform
# once. EGL renders without a display, on a GPU or in software; OSMesa leaks ~3 MB per frame.
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from .camera import VIEWS, Camera, check_view, clip_camera, fit_camera, view_region  # noqa: E402
from .video import Progress, VideoWriter  # noqa: E402

__all__ = [
    "VIEWS", "RenderError", "Camera", "fit_camera", "clip_camera", "view_region",
    "MeshRenderer", "close_renderer", "egl_library_missing", "egl_unavailable_reason", "gl_renderer_name",
    "GridResult", "grid_shape", "compose_grid", "draw_label", "label_box",
    "motion_frames", "render_motion", "render_grid",
]

DEFAULT_SIZE = 512

BACKGROUND = (0.94, 0.945, 0.955)  # light grey-blue, floats (pyrender rejects ints)
BODY_COLOR = (0.78, 0.74, 0.70)  # warm clay
FLOOR_COLOR = (0.90, 0.905, 0.915)
GRID_COLOR = (0.72, 0.73, 0.75)
GRID_CELL_M = 0.5  # floor grid spacing in metres
#: Directional lights (direction of travel, intensity): key from the front left above, a soft
#: fill from the front right, a rim from behind that separates the body from the background.
LIGHTS = (([-0.8, -0.7, -0.6], 2.2), ([0.9, -0.2, -0.5], 0.6), ([0.2, -0.4, 1.0], 1.2))
AMBIENT = 0.15


class RenderError(RuntimeError):
    """Rendering is impossible here (no OpenGL) or the inputs cannot be rendered."""


# ====================================================================== the OpenGL context

_GL_LOCK = threading.RLock()  # one EGL context: one thread renders at a time
_GL = None  # the process-wide offscreen renderer (see _offscreen)
_GL_GENERATION = 0  # counts contexts created: GPU buffers of an older one are gone


def _pyrender():
    """Import pyrender, first restoring what it needs from older numpy."""
    # pyrender 0.1.45 uses np.infty, removed in numpy 2.0.
    if not hasattr(np, "infty"):
        np.infty = np.inf
    import pyrender

    return pyrender


def _offscreen(width: int, height: int, msaa: int):
    """The process-wide pyrender OffscreenRenderer, created once, sized for this frame.

    Only one ever exists: a garbage-collected EGL renderer tears down state the others share,
    so it lives until `close_renderer` (registered at exit). Use it through `_current`.
    """
    global _GL, _GL_GENERATION
    if _GL is None:
        try:
            _GL = _create_offscreen(width, height)
        except Exception as exc:  # EGL/driver problems surface as many exception types
            raise RenderError(
                f"could not create an offscreen OpenGL context ({type(exc).__name__}: {exc}). "
                "On Debian/Ubuntu install libegl1 libegl-mesa0 libgl1-mesa-dri libgles2; "
                "or render the stick-figure preview (renderer='stick')") from exc
        _GL_GENERATION += 1
        if _GL_GENERATION == 1:
            atexit.register(close_renderer)
    _GL.viewport_width, _GL.viewport_height = width, height
    _GL._platform.make_current()
    if _GL._renderer.samples != msaa:
        _GL._renderer._delete_main_framebuffer()  # rebuilt with the new sample count on next render
        _GL._renderer.samples = msaa
    return _GL


@contextlib.contextmanager
def _current(width: int, height: int, msaa: int):
    """Hold the shared context, current in this thread, sized for a ``width`` x ``height`` image.

    An EGL context can be current in one thread only, and pyrender never releases it (its EGL
    ``make_uncurrent`` does nothing), so we release it here: the next render may come from
    another thread (e.g. the web app's workers).
    """
    with _GL_LOCK:
        gl = _offscreen(width, height, msaa)
        try:
            yield gl
        finally:
            from OpenGL import EGL

            platform = gl._platform
            if platform is not None and getattr(platform, "_egl_display", None) is not None:
                EGL.eglMakeCurrent(platform._egl_display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE,
                                   EGL.EGL_NO_CONTEXT)


def _create_offscreen(width: int, height: int):
    """A pyrender OffscreenRenderer whose renderer has a configurable MSAA sample count and
    reads back RGBA only.

    Upstream always draws into a 4x multisampled framebuffer (4x the fragment work on a CPU)
    and also reads back and linearises the depth buffer, which we never use.
    """
    pyrender = _pyrender()
    from OpenGL import GL

    class _Renderer(pyrender.Renderer):
        samples = 0  # MSAA samples; 0 draws straight into the buffer that is read back

        def _configure_main_framebuffer(self):
            if self._main_fb is not None and self._main_fb_dims == (self.viewport_width, self.viewport_height):
                return
            self._delete_main_framebuffer()
            w, h = self.viewport_width, self.viewport_height
            self._main_fb, self._main_cb, self._main_db = _framebuffer(GL, w, h, 0)
            if self.samples:
                self._main_fb_ms, self._main_cb_ms, self._main_db_ms = _framebuffer(GL, w, h, self.samples)
            else:
                self._main_fb_ms = self._main_fb
            self._main_fb_dims = (w, h)

        def _delete_main_framebuffer(self):
            fbs = {b for b in (self._main_fb, self._main_fb_ms) if b is not None}
            rbs = [b for b in (self._main_cb, self._main_db, self._main_cb_ms, self._main_db_ms) if b is not None]
            if fbs:
                GL.glDeleteFramebuffers(len(fbs), list(fbs))
            if rbs:
                GL.glDeleteRenderbuffers(len(rbs), rbs)
            self._main_fb = self._main_cb = self._main_db = None
            self._main_fb_ms = self._main_cb_ms = self._main_db_ms = None
            self._main_fb_dims = (None, None)

        def _read_main_framebuffer(self, scene, flags):
            w, h = self._main_fb_dims
            if self._main_fb_ms != self._main_fb:  # resolve the multisampled image
                GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self._main_fb_ms)
                GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, self._main_fb)
                GL.glBlitFramebuffer(0, 0, w, h, 0, 0, w, h, GL.GL_COLOR_BUFFER_BIT, GL.GL_NEAREST)
            GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self._main_fb)
            buf = GL.glReadPixels(0, 0, w, h, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE)
            # OpenGL rows run bottom-up; images run top-down. Alpha says what was drawn.
            return np.frombuffer(buf, np.uint8).reshape(h, w, 4)[::-1], None

    class _Offscreen(pyrender.OffscreenRenderer):
        def _create(self):
            super()._create()  # the EGL context (device EGL_DEVICE_ID, default 0)
            self._renderer = _Renderer(self.viewport_width, self.viewport_height)

    return _Offscreen(width, height)


def _framebuffer(GL, w: int, h: int, samples: int):
    """A framebuffer with RGBA colour and 24-bit depth renderbuffers (multisampled if samples,
    capped at what the driver allows: llvmpipe has 4 at most)."""
    if samples:
        samples = min(samples, int(GL.glGetIntegerv(GL.GL_MAX_SAMPLES)))
    color, depth = GL.glGenRenderbuffers(2)
    for rb, fmt in ((color, GL.GL_RGBA8), (depth, GL.GL_DEPTH_COMPONENT24)):
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, rb)
        if samples:
            GL.glRenderbufferStorageMultisample(GL.GL_RENDERBUFFER, samples, fmt, w, h)
        else:
            GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, fmt, w, h)
    fb = GL.glGenFramebuffers(1)
    GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, fb)
    GL.glFramebufferRenderbuffer(GL.GL_DRAW_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, color)
    GL.glFramebufferRenderbuffer(GL.GL_DRAW_FRAMEBUFFER, GL.GL_DEPTH_ATTACHMENT, GL.GL_RENDERBUFFER, depth)
    return fb, color, depth


def close_renderer() -> None:
    """Free the process's OpenGL context (also runs at exit). A later render creates a new one."""
    global _GL
    with _GL_LOCK:
        if _GL is not None:
            try:
                _GL.delete()
            except Exception:  # the context may already be gone at interpreter exit
                pass
            _GL = None


def gl_renderer_name() -> str:
    """The OpenGL renderer in use, e.g. ``llvmpipe (LLVM 15.0.6, 256 bits)`` or an NVIDIA GPU."""
    from OpenGL import GL

    with _current(16, 16, 0):
        name = GL.glGetString(GL.GL_RENDERER)
    return name.decode() if isinstance(name, bytes) else str(name)


def egl_library_missing() -> str | None:
    """None if the system's EGL library (libEGL, Debian's libegl1) loads, else why not.

    Tells "this machine has no EGL" apart from an error of our own rendering code, which a
    missing-library skip must never hide.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("EGL") or "libEGL.so.1"
    try:
        ctypes.CDLL(name)
    except OSError as exc:
        return f"the EGL library cannot be loaded ({exc}); install libegl1 libegl-mesa0 libgl1-mesa-dri"
    return None


def egl_unavailable_reason() -> str | None:
    """None if offscreen OpenGL works in this process, else why not (for skips and messages)."""
    try:
        with _current(16, 16, 0):
            pass
    except (RenderError, ImportError) as exc:
        return str(exc)
    return None


# ====================================================================== mesh renderer

def _normals_operator(faces: np.ndarray, n_vertices: int):
    """Sparse (V, F) matrix summing each face's normal into its three vertices.

    Precomputing it makes smooth vertex normals one sparse product per frame (~1.5 ms for the
    27k-triangle body) instead of a slow ``np.add.at`` scatter.
    """
    import scipy.sparse as sp

    rows = faces.reshape(-1)
    cols = np.repeat(np.arange(len(faces)), 3)
    data = np.ones(len(rows), np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(n_vertices, len(faces)))


def vertex_normals(vertices: np.ndarray, faces: np.ndarray, operator=None) -> np.ndarray:
    """(V, 3) float32 unit normals, area-weighted average of the adjacent faces'."""
    v = np.asarray(vertices, np.float32)
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    face_n = np.cross(b - a, c - a)  # length = 2 x area: bigger faces weigh more
    op = operator if operator is not None else _normals_operator(faces, len(v))
    n = np.asarray(op @ face_n, np.float32)
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    return n


def _look_at(direction) -> np.ndarray:
    """(4, 4) pose of a directional light shining along ``direction``."""
    z = -np.asarray(direction, np.float64)
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    x = x / np.linalg.norm(x) if np.linalg.norm(x) > 1e-6 else np.array([1.0, 0, 0])
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = x, np.cross(z, x), z
    return pose


FLOOR_RADIUS_M = 4.0  # the floor fades into the background towards this distance
_FLOOR_TEX_PX = 1024


@functools.lru_cache(maxsize=1)
def _floor_texture() -> np.ndarray:
    """(px, px, 3) uint8 image of the floor square (2 x FLOOR_RADIUS_M wide, centred on the body).

    A grid every GRID_CELL_M metres on a light floor that fades radially into the background
    colour, so there is no hard horizon line and far grid lines (which alias) vanish.
    """
    n = _FLOOR_TEX_PX
    m = (np.arange(n) + 0.5) / n * 2 * FLOOR_RADIUS_M - FLOOR_RADIUS_M  # texel centres, metres
    x, z = np.meshgrid(m, m)
    texel = 2 * FLOOR_RADIUS_M / n
    line_w = 2.2 * texel
    on_line = ((np.abs((x + GRID_CELL_M / 2) % GRID_CELL_M - GRID_CELL_M / 2) < line_w / 2)
               | (np.abs((z + GRID_CELL_M / 2) % GRID_CELL_M - GRID_CELL_M / 2) < line_w / 2))
    r = np.hypot(x, z) / FLOOR_RADIUS_M
    fade = np.clip((0.9 - r) / 0.65, 0.0, 1.0)[..., None]
    fade = fade * fade * (3 - 2 * fade)  # smoothstep
    floor = np.array(FLOOR_COLOR) * fade + np.array(BACKGROUND) * (1 - fade)
    img = np.where(on_line[..., None], np.array(GRID_COLOR) * fade + floor * (1 - fade), floor)
    img = np.round(img * 255).astype(np.uint8)
    img.flags.writeable = False  # cached and shared
    return img


def _floor_mesh(camera: Camera):
    """A floor square at the clip's lowest point, centred under the framed box."""
    pyrender = _pyrender()
    r, y = FLOOR_RADIUS_M, camera.floor_y
    # Grid lines stay on whole world coordinates, so drifting motion is seen against them.
    cx, cz = (np.round(camera.target[[0, 2]] / GRID_CELL_M) * GRID_CELL_M).tolist()
    corners = np.array([[cx - r, y, cz - r], [cx + r, y, cz - r], [cx + r, y, cz + r], [cx - r, y, cz + r]],
                       np.float32)
    uv = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32)  # texture row 0 is at -Z
    # Unlit: black base colour, the texture as emission, so the fade meets the background
    # colour exactly whatever the lights do (the floor scene has no lights anyway).
    texture = pyrender.Texture(source=_floor_texture(), source_channels="RGB")
    material = pyrender.MetallicRoughnessMaterial(baseColorFactor=[0.0, 0.0, 0.0, 1.0], metallicFactor=0.0,
                                                  roughnessFactor=1.0, emissiveTexture=texture,
                                                  emissiveFactor=[1.0, 1.0, 1.0])
    prim = pyrender.Primitive(positions=corners, normals=np.tile(np.float32([0, 1, 0]), (4, 1)),
                              texcoord_0=uv, indices=np.array([[0, 2, 1], [0, 3, 2]], np.uint32),
                              material=material, mode=4)
    return pyrender.Mesh([prim])


def _render_rgba(scene, width: int, height: int, msaa: int) -> np.ndarray:
    """(height, width, 4) uint8 image of a pyrender scene from the shared context."""
    with _current(width, height, msaa) as gl:
        rgba, _ = gl.render(scene)
    return rgba


FLOOR_MSAA = 4  # the floor is drawn once per clip: anti-alias its grid lines at no per-frame cost


class MeshRenderer:
    """Renders frames of one triangle mesh (the body) with a fixed camera.

    Args:
        width, height: image size in pixels.
        view: ``full``, ``upper`` or ``face`` (used when `render_clip` frames a clip itself).
        msaa: multisample anti-aliasing samples for the body, 0 (off, fastest) or 2/4/8 where the
            driver allows; 4x costs about twice the time per frame on a CPU.
        floor: draw the floor grid under the body.

    The floor never moves, so it is rendered once per camera into a background image; each frame
    draws only the body (with a transparent clear colour) and lays it over that image. On a CPU
    this saves the ~10 ms per frame that shading a floor covering half the picture costs.

    All instances share the process's single OpenGL context; rendering is serialised by a lock,
    so instances may be used from several threads.
    """

    def __init__(self, width: int = DEFAULT_SIZE, height: int = DEFAULT_SIZE, view: str = "full",
                 msaa: int = 0, floor: bool = True):
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if msaa not in (0, 1, 2, 4, 8, 16):
            raise ValueError(f"msaa must be 0, 2, 4, 8 or 16 samples, got {msaa}")
        self.width, self.height = int(width), int(height)
        self.view = check_view(view)
        self.msaa = 0 if msaa == 1 else int(msaa)
        self.floor = floor
        self.camera: Camera | None = None
        pyrender = _pyrender()
        # Alpha 0: where the body is not drawn, the readback says so (see render_frame).
        self._scene = pyrender.Scene(bg_color=[*BACKGROUND, 0.0], ambient_light=[AMBIENT] * 3)
        for direction, intensity in LIGHTS:
            self._scene.add(pyrender.DirectionalLight(color=[1.0, 1.0, 1.0], intensity=intensity),
                            pose=_look_at(direction))
        self._camera_node = None
        self._mesh_node = None
        self._faces: np.ndarray | None = None
        self._primitive = None
        self._normals_op = None
        self._interleaved: np.ndarray | None = None  # (V, 6) positions | normals, as the GPU buffer holds them
        self._generation = -1  # the context generation the body mesh was uploaded to
        self._clear = np.round(np.array(BACKGROUND) * 255).astype(np.uint8)
        self._background = np.empty((self.height, self.width, 3), np.uint8)
        self._background[:] = self._clear

    @property
    def aspect(self) -> float:
        return self.width / self.height

    # -- scene setup ----------------------------------------------------------------------
    def set_camera(self, camera: Camera) -> None:
        """Fix the camera (and the floor under it) for the following frames."""
        pyrender = _pyrender()
        self.camera = camera
        if self._camera_node is not None:
            self._scene.remove_node(self._camera_node)
        self._camera_node = self._scene.add(self._pyrender_camera(camera), pose=np.array(camera.pose))
        self._background[:] = self._clear
        if self.floor:
            floor_scene = pyrender.Scene(bg_color=[*BACKGROUND, 0.0], ambient_light=[0.0, 0.0, 0.0])
            floor_scene.add(_floor_mesh(camera))
            floor_scene.add(self._pyrender_camera(camera), pose=np.array(camera.pose))
            self._background[:] = _render_rgba(floor_scene, self.width, self.height, FLOOR_MSAA)[..., :3]

    def _pyrender_camera(self, camera: Camera):
        return _pyrender().PerspectiveCamera(yfov=camera.yfov, aspectRatio=self.aspect,
                                             znear=camera.znear, zfar=camera.zfar)

    def _set_faces(self, faces: np.ndarray, n_vertices: int) -> None:
        """(Re)build the body mesh for this topology (once per renderer in practice)."""
        pyrender = _pyrender()
        faces = np.ascontiguousarray(faces, dtype=np.int32)
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= n_vertices:
            raise RenderError(f"faces must be (F, 3) indices into {n_vertices} vertices")
        if self._mesh_node is not None:
            self._scene.remove_node(self._mesh_node)
        self._faces = faces
        self._normals_op = _normals_operator(faces, n_vertices)
        if self._interleaved is None or len(self._interleaved) != n_vertices:
            self._interleaved = np.zeros((n_vertices, 6), np.float32)
        material = pyrender.MetallicRoughnessMaterial(baseColorFactor=[*BODY_COLOR, 1.0], metallicFactor=0.0,
                                                      roughnessFactor=0.65)
        self._primitive = pyrender.Primitive(positions=np.zeros((n_vertices, 3), np.float32),
                                             normals=np.tile(np.float32([0, 1, 0]), (n_vertices, 1)),
                                             indices=faces, material=material, mode=4)
        self._mesh_node = self._scene.add(pyrender.Mesh([self._primitive]))
        self._generation = -1  # which context holds its GPU buffers: none yet

    # -- rendering ------------------------------------------------------------------------
    def render_frame(self, vertices: np.ndarray, faces: np.ndarray | None = None) -> np.ndarray:
        """(V, 3) vertices -> (height, width, 3) uint8 image. ``faces`` (F, 3) on the first call
        (or to change the topology); the camera must have been set (`set_camera`)."""
        if self.camera is None:
            raise RenderError("set_camera() first (or use render_clip, which frames the clip)")
        v = np.asarray(vertices, np.float32)
        if faces is not None and (self._faces is None or faces is not self._faces and
                                  not np.array_equal(faces, self._faces)):
            self._set_faces(faces, len(v))
        if self._faces is None:
            raise RenderError("no faces given")
        if v.shape != (len(self._interleaved), 3):
            raise RenderError(f"vertices must be ({len(self._interleaved)}, 3), got {v.shape}")
        self._interleaved[:, :3] = v
        self._interleaved[:, 3:] = vertex_normals(v, self._faces, self._normals_op)
        prim = self._primitive
        with _current(self.width, self.height, self.msaa) as gl:
            if self._generation not in (-1, _GL_GENERATION):  # that context was closed since
                self._set_faces(self._faces, len(v))
                prim = self._primitive
            self._generation = _GL_GENERATION
            # Keep pyrender's CPU copy current too: it re-uploads from it whenever the mesh
            # (re)enters the context, e.g. after another scene was rendered in between.
            prim.positions, prim.normals = self._interleaved[:, :3], self._interleaved[:, 3:]
            if prim._in_context():
                from OpenGL import GL

                # pyrender's vertex buffer interleaves position and normal per vertex: overwrite
                # it in place rather than building a new mesh and buffers every frame.
                GL.glBindBuffer(GL.GL_ARRAY_BUFFER, prim._buffers[0])
                GL.glBufferSubData(GL.GL_ARRAY_BUFFER, 0, self._interleaved.nbytes, self._interleaved)
                GL.glBindBuffer(GL.GL_ARRAY_BUFFER, 0)
            rgba, _ = gl.render(self._scene)
        return self._over_background(rgba)

    def _over_background(self, rgba: np.ndarray) -> np.ndarray:
        """Lay the body image (alpha = coverage) over the background image."""
        alpha = rgba[..., 3]
        out = self._background.copy()
        np.copyto(out, rgba[..., :3], where=(alpha == 255)[..., None])
        if self.msaa:
            # Anti-aliased edges were blended with the clear colour: swap in the background.
            edge = np.nonzero((alpha > 0) & (alpha < 255))
            if len(edge[0]):
                a = alpha[edge][:, None] / 255.0
                mix = rgba[..., :3][edge] + (1 - a) * (self._background[edge].astype(np.float64) - self._clear)
                out[edge] = np.clip(np.round(mix), 0, 255).astype(np.uint8)
        return out

    def render_clip(self, vertices: np.ndarray | Iterable[np.ndarray], faces: np.ndarray, *,
                    camera: Camera | None = None, region: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Frames of a clip: (T, V, 3) vertices (or an iterable of (V, 3)) -> (H, W, 3) uint8 each.

        The camera is fixed for the whole clip: ``camera`` if given, else fitted to the clip's
        extent for this renderer's view (that needs ``vertices`` as an array; ``region`` is the
        `view_region` mask, default: the ``upper``/``face`` parts of the first frame by height).
        """
        if camera is None:
            if not isinstance(vertices, np.ndarray):
                raise RenderError("give a camera (clip_camera) when vertices come as an iterator")
            if region is None and self.view != "full":
                region = _region_by_height(vertices[0], self.view)
            camera = clip_camera(vertices, self.view, self.aspect, region)
        self.set_camera(camera)
        for v in vertices:
            yield self.render_frame(v, faces)


def _region_by_height(vertices: np.ndarray, view: str) -> np.ndarray:
    """Fallback `view_region` from one standing frame: the top 50% (upper) or top 0.3 m (face)."""
    y = vertices[:, 1]
    top, bottom = y.max(), y.min()
    if view == "upper":
        return y >= bottom + 0.5 * (top - bottom)
    head = y >= top - 0.3
    cx = np.median(vertices[head, 0])
    return head & (np.abs(vertices[:, 0] - cx) < 0.2)


# ====================================================================== grids and labels

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


_BODY = None


def _default_body():
    """The baked free body, loaded once per process."""
    global _BODY
    if _BODY is None:
        from ..body.anny import Body

        _BODY = Body.load()
    return _BODY


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


def _trans(motion, keep_translation: bool) -> np.ndarray:
    """(T, 3) root translation to render: as is, or with the ground-plane drift removed.

    Without translation the body stays where it starts horizontally; the vertical part is kept
    so crouches and bounces still look right and the feet stay on the floor.
    """
    if keep_translation:
        return motion.trans
    t = motion.trans.copy()
    t[:, [0, 2]] = motion.trans[:1, [0, 2]]
    return t


_CHUNK = 32  # frames posed at once: fast batched skinning, bounded memory


def _posed_chunks(body, motion, trans: np.ndarray, stride: int = 1) -> Iterator[np.ndarray]:
    """(t, V, 3) float32 vertex chunks of every ``stride``-th frame, in order."""
    idx = np.arange(0, motion.n_frames, stride)
    for s in range(0, len(idx), _CHUNK):
        i = idx[s:s + _CHUNK]
        yield np.asarray(body.vertices(motion.poses[i], trans[i], expressions=motion.expressions[i]),
                         np.float32)


def motion_frames(motions: Sequence, *, view: str = "full", size: int | tuple[int, int] = DEFAULT_SIZE,
                  renderer: str = "mesh", body=None, msaa: int = 0,
                  keep_translation: bool | None = None) -> list[Iterator[np.ndarray]]:
    """One iterator of (h, w, 3) uint8 frames per motion, framed alike (what `render_grid` encodes).

    All clips share one camera, fitted to the union of their extents, so they appear at the same
    scale and compare fairly. Frames are produced on demand: pull them in lockstep (frame t of
    every clip, then t + 1) or one clip after the other. Options as in `render_grid`.
    """
    _check_motions(motions)
    view = check_view(view)
    keep = _keep_translation(keep_translation, view)
    w, h = _cell_size(size)
    if renderer == "mesh":
        return _mesh_frames(motions, body, view, (w, h), msaa, keep)
    if renderer == "stick":
        return _stick_frames(motions, view, (w, h), keep)
    raise ValueError(f"renderer must be 'mesh' or 'stick', got {renderer!r}")


def _mesh_frames(motions, body, view, size, msaa, keep_translation) -> list[Iterator[np.ndarray]]:
    body = body if body is not None else _default_body()
    w, h = size
    renderer = MeshRenderer(w, h, view=view, msaa=msaa)
    rest_joints = getattr(body, "rest_joints", None)
    if rest_joints is None:
        rest_joints = body.joints(np.zeros((1, 55, 3), np.float32), np.zeros((1, 3), np.float32))[0]
    region = view_region(body.rest_vertices, rest_joints, view)
    trans = [_trans(m, keep_translation) for m in motions]
    # The extent is measured on every 3rd frame (motion between them is within the margin).
    samples = (chunk for m, t in zip(motions, trans) for chunk in _posed_chunks(body, m, t, stride=3))
    renderer.set_camera(clip_camera(samples, view, w / h, region))
    faces = np.asarray(body.faces)

    def frames(m, t):
        for chunk in _posed_chunks(body, m, t):
            for v in chunk:
                yield renderer.render_frame(v, faces)

    return [frames(m, t) for m, t in zip(motions, trans)]


def _stick_frames(motions, view, size, keep_translation) -> list[Iterator[np.ndarray]]:
    from dataclasses import replace

    from ..motion.kinematics import joint_positions
    from .stick import StickRenderer

    joints = [joint_positions(replace(m, trans=_trans(m, keep_translation))) for m in motions]
    renderer = StickRenderer(*size, view=view).fit(np.concatenate(joints))
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
        renderer: ``mesh`` (the free body, shaded) or ``stick`` (2D skeleton preview, instant).
        body: the body to pose (default: the baked free body, `emage_core.body.Body.load()`).
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
