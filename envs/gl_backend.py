"""Which OpenGL backend MuJoCo renders with (``MUJOCO_GL``), chosen without loading MuJoCo.

MuJoCo's default, GLFW, opens a window and fails without a display; headless machines need
EGL or OSMesa. The choice must be made before the first frame is rendered.
"""

from __future__ import annotations

import os
import sys


def has_display() -> bool:
    """Whether GLFW can open a window: always outside Linux (macOS and Windows need no
    variable), on Linux where X11's ``DISPLAY`` or ``WAYLAND_DISPLAY`` is set."""
    return not sys.platform.startswith("linux") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def choose_gl_backend() -> str:
    """``MUJOCO_GL`` as set; else, on Linux, PyOpenGL's headless platform where
    ``PYOPENGL_PLATFORM`` names one (MuJoCo refuses a backend other than that), or ``egl``
    when there is no display (set for this process). Elsewhere MuJoCo's default, GLFW."""
    if "MUJOCO_GL" not in os.environ and sys.platform.startswith("linux"):
        pyopengl = os.environ.get("PYOPENGL_PLATFORM", "").lower()
        if pyopengl in ("egl", "osmesa"):
            os.environ["MUJOCO_GL"] = pyopengl
        elif not has_display():
            os.environ["MUJOCO_GL"] = "egl"
    return os.environ.get("MUJOCO_GL", "glfw")


def windowless_glfw() -> str | None:
    """Why the chosen backend cannot render here (GLFW without a display), or None. Asked
    before rendering: GLFW would print warnings of its own before MuJoCo's error."""
    backend = choose_gl_backend()
    if backend.lower() != "glfw" or has_display():
        return None
    return (f"MUJOCO_GL={backend}: GLFW opens a window, and neither DISPLAY nor "
            "WAYLAND_DISPLAY is set. Unset MUJOCO_GL (metarl then uses egl) or set another "
            "backend")
