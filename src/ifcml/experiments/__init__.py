"""Splits, metrics, MLflow tracking and evaluation, shared by the classical and deep branches."""

import os

# Runs' files are read back one small file at a time: no progress bar per download (a user may set it).
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
