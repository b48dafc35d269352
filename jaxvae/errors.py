"""Exception types raised by jaxvae.

Every error a user can cause (a bad config value, a missing or corrupt data file, an incompatible checkpoint) is
raised as a subclass of :class:`JaxvaeError` with a message that names the problem and how to fix it. The CLI
prints such messages as one paragraph and exits non-zero; any other exception is a bug.
"""

from __future__ import annotations


class JaxvaeError(Exception):
    """Base class of all errors caused by user input."""


class ConfigError(JaxvaeError, ValueError):
    """An invalid configuration: unknown key, wrong type, value out of range, unknown preset."""


class DataError(JaxvaeError, ValueError):
    """A dataset that cannot be used: missing files, bad format, values outside the likelihood's support."""


class ChecksumError(DataError):
    """A file whose checksum does not match the published value (corrupt or truncated download)."""


class CheckpointError(JaxvaeError):
    """A checkpoint or run directory that cannot be used (corrupt, incompatible, or would be overwritten)."""


class TrainingDivergedError(JaxvaeError):
    """Too many consecutive updates had non-finite loss or gradients."""


class TrainingPreempted(JaxvaeError):
    """SIGTERM/SIGINT arrived: the step in flight was finished and checkpointed; re-run the command to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class RunDirectoryBusyError(JaxvaeError):
    """Another process holds the run directory's lock (see :mod:`jaxvae.rundir`)."""


class DiskFullError(JaxvaeError):
    """A write into a run directory failed for lack of space; the last complete checkpoint is intact."""


class RunFileWarning(UserWarning):
    """A damaged run-directory file was skipped or replaced as documented (README, "Reliability")."""
