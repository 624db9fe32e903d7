"""Inference backends behind one interface; heavy runtimes are imported only when used."""

from .base import Backend, BackendError, BackendUnavailable
from .selection import BACKEND_NAMES, PRECISIONS, create_backend

__all__ = ["Backend", "BackendError", "BackendUnavailable", "create_backend", "BACKEND_NAMES", "PRECISIONS"]
