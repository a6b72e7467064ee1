"""`MeshRenderer`: the body mesh, a floor grid and lights; each frame only the vertex buffer is rewritten
in place (a new mesh per frame costs ~3x more). Runs on the process's OpenGL context (`render.gl`).

Measured on 2 CPU cores (llvmpipe), 512x512, body of 13,718 vertices: see ``bench/bench_render.py``.
"""
from __future__ import annotations

import functools
from typing import Iterable, Iterator

import numpy as np

from .camera import Camera, check_view, clip_camera
from .gl import CONTEXT, RenderError, current, pyrender

__all__ = ["MeshRenderer", "vertex_normals", "BACKGROUND", "DEFAULT_SIZE"]

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
    """A floor square where the skeleton's soles stand (``camera.floor_y``), centred under the framed box."""
    pr = pyrender()
    r, y = FLOOR_RADIUS_M, camera.floor_y
    # Grid lines stay on whole world coordinates, so drifting motion is seen against them.
    cx, cz = (np.round(camera.target[[0, 2]] / GRID_CELL_M) * GRID_CELL_M).tolist()
    corners = np.array([[cx - r, y, cz - r], [cx + r, y, cz - r], [cx + r, y, cz + r], [cx - r, y, cz + r]],
                       np.float32)
    uv = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32)  # texture row 0 is at -Z
    # Unlit: black base colour, the texture as emission, so the fade meets the background
    # colour exactly whatever the lights do (the floor scene has no lights anyway).
    texture = pr.Texture(source=_floor_texture(), source_channels="RGB")
    material = pr.MetallicRoughnessMaterial(baseColorFactor=[0.0, 0.0, 0.0, 1.0], metallicFactor=0.0,
                                                  roughnessFactor=1.0, emissiveTexture=texture,
                                                  emissiveFactor=[1.0, 1.0, 1.0])
    prim = pr.Primitive(positions=corners, normals=np.tile(np.float32([0, 1, 0]), (4, 1)),
                              texcoord_0=uv, indices=np.array([[0, 2, 1], [0, 3, 2]], np.uint32),
                              material=material, mode=4)
    return pr.Mesh([prim])


def _render_rgba(scene, width: int, height: int, msaa: int) -> np.ndarray:
    """(height, width, 4) uint8 image of a pyrender scene from the shared context."""
    with current(width, height, msaa) as gl:
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
        pr = pyrender()
        # Alpha 0: where the body is not drawn, the readback says so (see render_frame).
        self._scene = pr.Scene(bg_color=[*BACKGROUND, 0.0], ambient_light=[AMBIENT] * 3)
        for direction, intensity in LIGHTS:
            self._scene.add(pr.DirectionalLight(color=[1.0, 1.0, 1.0], intensity=intensity),
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
        pr = pyrender()
        self.camera = camera
        if self._camera_node is not None:
            self._scene.remove_node(self._camera_node)
        self._camera_node = self._scene.add(self._pyrender_camera(camera), pose=np.array(camera.pose))
        self._background[:] = self._clear
        if self.floor:
            floor_scene = pr.Scene(bg_color=[*BACKGROUND, 0.0], ambient_light=[0.0, 0.0, 0.0])
            floor_scene.add(_floor_mesh(camera))
            floor_scene.add(self._pyrender_camera(camera), pose=np.array(camera.pose))
            self._background[:] = _render_rgba(floor_scene, self.width, self.height, FLOOR_MSAA)[..., :3]

    def _pyrender_camera(self, camera: Camera):
        return pyrender().PerspectiveCamera(yfov=camera.yfov, aspectRatio=self.aspect,
                                             znear=camera.znear, zfar=camera.zfar)

    def _set_faces(self, faces: np.ndarray, n_vertices: int) -> None:
        """(Re)build the body mesh for this topology (once per renderer in practice)."""
        pr = pyrender()
        faces = np.ascontiguousarray(faces, dtype=np.int32)
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= n_vertices:
            raise RenderError(f"faces must be (F, 3) indices into {n_vertices} vertices")
        if self._mesh_node is not None:
            self._scene.remove_node(self._mesh_node)
        self._faces = faces
        self._normals_op = _normals_operator(faces, n_vertices)
        if self._interleaved is None or len(self._interleaved) != n_vertices:
            self._interleaved = np.zeros((n_vertices, 6), np.float32)
        material = pr.MetallicRoughnessMaterial(baseColorFactor=[*BODY_COLOR, 1.0], metallicFactor=0.0,
                                                      roughnessFactor=0.65)
        self._primitive = pr.Primitive(positions=np.zeros((n_vertices, 3), np.float32),
                                             normals=np.tile(np.float32([0, 1, 0]), (n_vertices, 1)),
                                             indices=faces, material=material, mode=4)
        self._mesh_node = self._scene.add(pr.Mesh([self._primitive]))
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
        with current(self.width, self.height, self.msaa) as gl:
            if self._generation not in (-1, CONTEXT.generation):  # that context was closed since
                self._set_faces(self._faces, len(v))
                prim = self._primitive
            self._generation = CONTEXT.generation
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
