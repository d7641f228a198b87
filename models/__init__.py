"""Face detectors and embedders, each behind one small interface (see models.base)."""
