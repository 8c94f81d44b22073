"""File formats nanoBragg reads and writes, one small module each (host NumPy only)."""


class InputError(ValueError):
    """A user-supplied file or value is unusable; the message names it and says why."""
