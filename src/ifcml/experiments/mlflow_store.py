"""Opening an MLflow tracking store, and finding runs in it by filters read to the last page.

A new SQLite store is created under a file lock (MLflow's schema migration breaks a database
that two processes create at once). A search capped at one page silently loses runs once a
design has more than a page of them (MLflow returns newest first): a resumed grid once lost
its designs' parents that way. Kept apart from :mod:`ifcml.experiments.tracking` (which brings
the evaluation code) so that readers such as ``compare`` start fast.
"""

from __future__ import annotations

import fcntl
import os
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from ifcml.errors import InputError

SEARCH_PAGE = 1000  # runs per search request
SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "file")


def tracking_uri(explicit: str | None = None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` (SQLite) here."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def connect(uri: str, existing: bool = False) -> MlflowClient:
    """A client of the tracking store at ``uri``, which also becomes this process's MLflow
    default (the fluent API that logs models reads it). A new SQLite store is created under a
    file lock: MLflow's schema migration breaks the database for good when two processes run
    it at once. Readers (``existing``) refuse a SQLite store that does not exist rather than
    create an empty one at a misspelt path."""
    scheme = urlparse(uri).scheme
    if scheme not in SCHEMES:
        raise InputError(
            f"tracking URI {uri!r}: unsupported scheme {scheme!r}; use sqlite:///PATH.db, "
            "http(s)://HOST:PORT of an MLflow server, or a database URL (postgresql://, mysql://)"
        )
    database = Path(uri.removeprefix("sqlite:///"))
    if existing and scheme == "sqlite" and not database.is_file():
        raise InputError(f"{uri}: no MLflow store there ({database} does not exist); check --tracking-uri")
    _create_once(uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


@lru_cache(maxsize=8)
def _create_once(uri: str) -> None:
    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri.removeprefix("sqlite:///"))
    if not database.parent.is_dir():
        raise InputError(f"{uri}: the folder {database.parent} for the MLflow database does not exist")
    with open(database.with_name(f"{database.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        MlflowClient(uri).search_experiments(max_results=1)  # creates or migrates the tables


def search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Run]:
    """Every run matching ``filter_string``, page after page (never one page of results)."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=SEARCH_PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs
