"""Named exceptions. Every message is one line that names the problem and the way out.

This module imports nothing from the package so every layer can raise these.
"""

from __future__ import annotations


class VaePipelineError(Exception):
    """Base class: an error the user can fix; the CLI prints its message on one line and exits non-zero."""

    exit_code: int = 1


class ConfigError(VaePipelineError):
    """The configuration is invalid (unknown key, wrong type, inconsistent values)."""

    exit_code = 2


class DataError(VaePipelineError):
    """The input data cannot be used (missing, corrupt, empty, unsupported column types)."""

    exit_code = 3


class StorageError(VaePipelineError):
    """A storage location cannot be read or written (filesystem not installed, permission, missing file)."""

    exit_code = 4


class OutputExistsError(StorageError):
    """The output location already holds another run; refused unless the user asks to overwrite."""


class NotFittedError(VaePipelineError):
    """A transform or sampler was used before `fit` was called."""


class ArtifactMismatchError(VaePipelineError):
    """Two artifacts do not belong together (statistics computed for another model bundle)."""

    exit_code = 5


class PrivacyError(VaePipelineError):
    """A sampler's rows sit too close to training rows; refused unless the user opts out of the guard."""

    exit_code = 6
