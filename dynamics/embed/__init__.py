"""Image embedding: model backends and the embed stage."""
