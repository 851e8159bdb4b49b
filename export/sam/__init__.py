"""``robis-edge export sam``: SAM (segment-anything) image encoder and box decoder to ONNX, added
to an existing bundle as the ``refine.sam`` section (docs/refine.md).

Heavy imports (torch, onnx, segment_anything) happen inside the functions of the submodules;
``export.sam.cli`` only defines arguments."""
