"""Splits, metrics, MLflow tracking and evaluation, shared by the classical and deep branches."""
