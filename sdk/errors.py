"""Typed errors of the SDK. Every message says what was wrong and what to do about it."""

from __future__ import annotations


class RobisError(Exception):
    """Base class of every error raised on purpose by robis-edge."""

    code = "internal"


class InputError(RobisError, ValueError):
    """A frame or map that the pipeline cannot take (wrong dtype, shape, empty...)."""

    code = "bad_input"


class BundleError(RobisError):
    """A bundle that is missing, malformed, of an unknown format or with corrupted files."""

    code = "bad_bundle"


class CalibrationError(RobisError):
    """Statistics needed by the chosen scope are missing or degenerate."""

    code = "calibration"


class BackendError(RobisError):
    """A model backend that cannot be created or run as asked."""

    code = "backend"


class EngineError(RobisError):
    """An engine that cannot be built on this device, or that no precision step made acceptable."""

    code = "engine"
