"""Bodies that wear a motion, all posed on SMPL-X's skeleton for the motion's shape:

- ``anny``: the free Anny body (baked in ``assets/``), retargeted onto the SMPL-X joints (`anny`);
- ``mannequin``: mannequin-x's neutral wooden mannequin, no identity cues (`mannequin`);
- ``smplx``: the official SMPL-X mesh, when the operator supplies the model files (``$EMAGE_SMPLX_MODEL``).

Importing this package is light (settings are checked against `BODIES`); the bodies load on first use.
"""
from __future__ import annotations

import os

BODIES = ("anny", "mannequin", "smplx")
SMPLX_ENV = "EMAGE_SMPLX_MODEL"  # the same name as `anny.SMPLX_ENV`

__all__ = ["BODIES", "SMPLX_ENV", "Body", "BodyError", "SMPLXBody", "MannequinBody", "available_bodies", "default_body",
           "check_body", "load_body"]

_LAZY = {"Body": ("anny", "Body"), "BodyError": ("anny", "BodyError"), "SMPLXBody": ("anny", "SMPLXBody"),
         "MannequinBody": ("mannequin", "MannequinBody")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def available_bodies() -> tuple[str, ...]:
    """The bodies this machine can show: ``smplx`` only where ``$EMAGE_SMPLX_MODEL`` is set."""
    return BODIES if os.environ.get(SMPLX_ENV) else BODIES[:2]


def default_body() -> str:
    """``smplx`` where the operator supplies the SMPL-X model files, else ``anny`` (as before ``--body``)."""
    return "smplx" if os.environ.get(SMPLX_ENV) else "anny"


def check_body(name) -> str:
    """``name`` if it is a body this machine can show, else ValueError naming the choices."""
    if name not in BODIES:
        raise ValueError(f"body must be one of {', '.join(BODIES)}, got {name!r}")
    if name not in available_bodies():
        raise ValueError(f"the smplx body needs the official SMPL-X model files, which this server does not have "
                         f"(the operator sets ${SMPLX_ENV}); choose {' or '.join(available_bodies())}")
    return name


def load_body(name: str | None = None):
    """The body called ``name`` (one of `BODIES`; None: `default_body`), loaded once per process."""
    name = check_body(default_body() if name is None else name)
    if name == "mannequin":
        from .mannequin import MannequinBody

        return MannequinBody.load()
    from .anny import BODY_ASSET, Body

    return Body.load(None if name == "smplx" else BODY_ASSET)
