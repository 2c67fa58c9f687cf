"""Using a finished experiment: ``ifcml export`` (the best design as an MLflow model that takes
raw cell images) and ``ifcml predict`` (per-cell classes and the per-sample readout)."""
