"""Model specs (``models/*.yaml``) turned into estimators, and their hyperopt tuning."""
