"""EMAGE (Liu et al., CVPR 2024): the networks (`model`), windowed decoding of any length (`inference`)."""
