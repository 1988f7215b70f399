"""Exceptions and warnings raised by radiorecon."""

__all__ = [
    "RadioreconError",
    "ModelFileError",
    "InputError",
    "CapabilityError",
    "BackendError",
    "NotFittedError",
    "BackendLoadWarning",
    "RadioreconWarning",
]


class RadioreconError(Exception):
    """Base class of the errors raised by radiorecon."""


class ModelFileError(RadioreconError, ValueError):
    """A model file is missing, truncated, corrupted, foreign or too new.

    The message names the file and the reason.
    """


class InputError(RadioreconError, ValueError):
    """An input (image, PSF, data set, output path) cannot be used as given.

    The message names the input (the user's path where there is one) and
    what is wrong with it.
    """


class CapabilityError(RadioreconError, TypeError):
    """A backend was asked for something it does not declare it can do."""


class BackendError(RadioreconError, RuntimeError):
    """A backend's own code failed (at set-up or by breaking the backend contract).

    The message names the backend and, for plugins, their distribution.
    """


class NotFittedError(RadioreconError, RuntimeError):
    """A backend that needs training was used before `~radiorecon.Reconstructor.fit`."""


class RadioreconWarning(UserWarning):
    """Base class of the warnings issued by radiorecon."""


class BackendLoadWarning(RadioreconWarning):
    """An installed backend plugin could not be loaded and was skipped."""
