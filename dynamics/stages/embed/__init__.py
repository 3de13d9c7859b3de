"""The embed stage: image embedding backends and the per-part embedding run."""
