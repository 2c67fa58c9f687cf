"""Errors a user can act on.

Every error raised for bad input or a bad request is an :class:`IfcmlError`; the CLI prints
its message as one line and exits non-zero, without a traceback. Messages name the file,
cell or key at fault and say what was expected.
"""


class IfcmlError(Exception):
    """A problem with the user's input or request (not a bug in ifcml)."""


class InputError(IfcmlError):
    """An input file or folder is missing, unreadable or not what was expected."""


class StoreError(IfcmlError):
    """A CellStore cannot be written or read as asked."""


class IfcmlNotice(UserWarning):
    """Something a user should know that does not stop the work (the CLI prints one line)."""
