"""DVC stage entry points (``python -m pipeline.<stage>``): read params, call hjepa, write outs."""
