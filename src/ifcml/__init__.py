"""ifcml: classical machine learning vs deep learning on imaging flow cytometry images."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ifcml")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
