"""Rendering: the OpenGL context, the mesh renderer and grids (`mesh`), the stick figure, framing, video files.

Importing this package is light (no OpenGL): the names below are what settings are checked against.
"""
from .camera import VIEWS

RENDERERS = ("mesh", "stick")  # the body mesh through OpenGL, or the instant stick figure

__all__ = ["RENDERERS", "VIEWS"]
