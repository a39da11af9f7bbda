"""Attack simulation for tests and benchmarks; every attack returns its ground truth."""

from sanitize.attacks.patch import apply_patch, checkerboard, poison_dirty_label

__all__ = ["apply_patch", "checkerboard", "poison_dirty_label"]
