"""Tools around the library, not part of the per-frame path: evaluation (``evaluate``, ``bench``,
metrics, reports) and synthetic camera frames (the camera simulator, demos and tests).

They import the library (``sdk``) and never the other way round; like the library they need
neither torch nor the export toolchain.
"""
