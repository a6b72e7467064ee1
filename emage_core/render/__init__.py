"""Rendering: the OpenGL context, the mesh renderer and grids (`mesh`), the stick figure, framing, video files."""
