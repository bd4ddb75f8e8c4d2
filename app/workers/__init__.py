"""What runs in gunicorn's master and hooks: supervision, worker recycling, the worker registry,
descriptor limits, malloc arenas, simulator mode and the access logger."""
