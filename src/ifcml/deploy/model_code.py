"""The exported model's Python code, run by MLflow when the model is loaded (MLflow's
"models from code": the model object is built here, nothing is unpickled). Not imported by ifcml."""

import mlflow

from ifcml.deploy.pyfunc import CellClassifier

mlflow.models.set_model(CellClassifier())
