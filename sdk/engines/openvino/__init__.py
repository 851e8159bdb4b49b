"""OpenVINO engines built on the device (docs/openvino.md): f32/bf16 compile hints on the bundle's
ONNX and NNCF int8 post-training quantisation, each gated on parity with ONNX Runtime fp32."""
