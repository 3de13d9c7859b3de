"""Stage shells around the pure DynamiCS core: cluster-fit, assign, scale (I/O lives here)."""
