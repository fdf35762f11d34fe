"""Ray Tune studies: specs (search spaces, ablations), the trainable, the runner."""
