"""TensorRT engines for bundles, built on the device: plans, the builder, the parity gate, selftest."""
