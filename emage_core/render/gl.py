"""The OpenGL context: ONE pyrender offscreen renderer per process, on EGL (Mesa llvmpipe on a CPU,
the NVIDIA driver on a GPU), created on first use and closed at exit.

`GLContext` owns it, with everything that must happen only when rendering really starts: choosing
EGL for PyOpenGL, pyrender's import (and its numpy shim) and the context itself. Importing this module
does nothing of that. ``CONTEXT`` is the process's context; `current` hands it to one thread at a time.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import threading

import numpy as np

__all__ = ["RenderError", "GLContext", "CONTEXT", "current", "close_renderer", "gl_renderer_name",
           "egl_library_missing", "egl_unavailable_reason", "pyrender"]


class RenderError(RuntimeError):
    """Rendering is impossible here (no OpenGL) or the inputs cannot be rendered."""


# ====================================================================== the OpenGL context

def pyrender():
    """The pyrender module, imported on first use with EGL chosen and the numpy shim it needs."""
    # PyOpenGL picks its platform once, at its first import: EGL renders without a display, on a
    # GPU or in software (OSMesa leaks ~3 MB per frame). A user's own choice is kept.
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    if not hasattr(np, "infty"):  # pyrender 0.1.45 uses np.infty, removed in numpy 2.0
        np.infty = np.inf
    import pyrender as module

    return module


class GLContext:
    """The process's offscreen OpenGL renderer: created on first use, one thread at a time.

    Only one ever exists: a garbage-collected EGL renderer tears down state the others share, so it
    lives until `close` (registered at exit). ``generation`` counts contexts created: GPU buffers
    made in an older one are gone.
    """

    def __init__(self):
        self.lock = threading.RLock()
        self.renderer = None
        self.generation = 0

    def _offscreen(self, width: int, height: int, msaa: int):
        if self.renderer is None:
            try:
                self.renderer = _create_offscreen(width, height)
            except Exception as exc:  # EGL/driver problems surface as many exception types
                raise RenderError(
                    f"could not create an offscreen OpenGL context ({type(exc).__name__}: {exc}). "
                    "On Debian/Ubuntu install libegl1 libegl-mesa0 libgl1-mesa-dri libgles2; "
                    "or render the stick-figure preview (renderer='stick')") from exc
            self.generation += 1
            if self.generation == 1:
                atexit.register(self.close)
        gl = self.renderer
        gl.viewport_width, gl.viewport_height = width, height
        gl._platform.make_current()
        if gl._renderer.samples != msaa:
            gl._renderer._delete_main_framebuffer()  # rebuilt with the new sample count on next render
            gl._renderer.samples = msaa
        return gl

    @contextlib.contextmanager
    def current(self, width: int, height: int, msaa: int):
        """Hold the context, current in this thread, sized for a ``width`` x ``height`` image.

        An EGL context can be current in one thread only, and pyrender never releases it (its EGL
        ``make_uncurrent`` does nothing), so we release it here: the next render may come from
        another thread (e.g. the web app's workers).
        """
        with self.lock:
            gl = self._offscreen(width, height, msaa)
            try:
                yield gl
            finally:
                from OpenGL import EGL

                platform = gl._platform
                if platform is not None and getattr(platform, "_egl_display", None) is not None:
                    EGL.eglMakeCurrent(platform._egl_display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE,
                                       EGL.EGL_NO_CONTEXT)

    def close(self) -> None:
        """Free the context (also runs at exit). A later render creates a new one."""
        with self.lock:
            if self.renderer is not None:
                try:
                    self.renderer.delete()
                except Exception:  # the context may already be gone at interpreter exit
                    pass
                self.renderer = None


CONTEXT = GLContext()
current = CONTEXT.current


def _create_offscreen(width: int, height: int):
    """A pyrender OffscreenRenderer whose renderer has a configurable MSAA sample count and
    reads back RGBA only.

    Upstream always draws into a 4x multisampled framebuffer (4x the fragment work on a CPU)
    and also reads back and linearises the depth buffer, which we never use.
    """
    pyrender_ = pyrender()
    from OpenGL import GL

    class _Renderer(pyrender_.Renderer):
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

    class _Offscreen(pyrender_.OffscreenRenderer):
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
    CONTEXT.close()


def gl_renderer_name() -> str:
    """The OpenGL renderer in use, e.g. ``llvmpipe (LLVM 15.0.6, 256 bits)`` or an NVIDIA GPU."""
    from OpenGL import GL

    with current(16, 16, 0):
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
        with current(16, 16, 0):
            pass
    except (RenderError, ImportError) as exc:
        return str(exc)
    return None


# ====================================================================== mesh renderer
