"""TensorRT engines for NVIDIA devices: build plans and fp32 pins, the builder, the ``build`` flow."""
