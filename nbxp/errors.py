"""nbxp's error types.

:class:`NbxpError` is the base of every error caused by what the user gave (a flag, a value,
a file): the message names it and says what was expected, and the command prints it as one
``nbxp: error:`` line.  Anything else that escapes is a defect in nbxp itself and is reported
as an internal error.  It derives from ``ValueError`` so that library callers catching that
keep working.
"""


class NbxpError(ValueError):
    """Unusable user input; the message names the flag or file and what was expected."""


class ConfigError(NbxpError):
    """A :class:`nbxp.config.SimConfig` that describes no possible experiment (a degenerate
    cell, a singular A matrix, non-finite values from any source, a run too large for memory);
    raised where the set-up checks it, before any array is built."""
