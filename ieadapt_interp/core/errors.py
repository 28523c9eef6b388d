"""One base class for the errors a user can fix: :class:`IEAdaptError`.

Every error this package raises because of its input (a bad argument, an unknown name, a missing file)
derives from :class:`IEAdaptError`. Each subclass also derives from the built-in exception the same mistake
raised before (``ValueError``, ``TypeError``, ``KeyError``, ``FileNotFoundError``, ``NotImplementedError``),
so ``except ValueError`` and the like keep working. Anything else (a bug, an out-of-memory error) is not an
``IEAdaptError`` and keeps its traceback; the ``ieadapt`` command prints an ``IEAdaptError`` as one line.

>>> try:
...     raise IEAdaptValueError("ratio must lie in (0, 1]; got 2.")
... except ValueError as error:          # an existing ``except ValueError`` still catches it
...     print(isinstance(error, IEAdaptError), error)
True ratio must lie in (0, 1]; got 2.
"""

from __future__ import annotations


class IEAdaptError(Exception):
    """Base class of every user-fixable error of ``ieadapt_interp`` (the message says what to do)."""


class IEAdaptValueError(IEAdaptError, ValueError):
    """A value outside what the function accepts (also a ``ValueError``)."""


class IEAdaptTypeError(IEAdaptError, TypeError):
    """An argument of the wrong type (also a ``TypeError``)."""


class IEAdaptKeyError(IEAdaptError, KeyError):
    """An unknown name: layer, metric, variable (also a ``KeyError``; ``str()`` is the plain message).

    >>> str(IEAdaptKeyError("unknown layer 'x'; see ia.attention_layers(pipe)"))
    "unknown layer 'x'; see ia.attention_layers(pipe)"
    """

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class IEAdaptFileNotFoundError(IEAdaptError, FileNotFoundError):
    """A file or folder that does not exist (also a ``FileNotFoundError``)."""


class IEAdaptNotImplementedError(IEAdaptError, NotImplementedError):
    """A request this package knows but cannot compute here (also a ``NotImplementedError``)."""


__all__ = [
    "IEAdaptError",
    "IEAdaptFileNotFoundError",
    "IEAdaptKeyError",
    "IEAdaptNotImplementedError",
    "IEAdaptTypeError",
    "IEAdaptValueError",
]
