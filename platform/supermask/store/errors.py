"""Errors raised by the mask store; each message names the file and the remedy."""

from __future__ import annotations


class MaskFileError(Exception):
    """Base class of every mask-store error."""


class NotAMaskFileError(MaskFileError, ValueError):
    """A path that exists but is not a supermask mask file (or journal); it is never touched."""


class StoreLockedError(MaskFileError):
    """Another handle already owns the shard file for writing."""


class CorruptJournalError(MaskFileError):
    """A damaged journal record that is not a torn tail; nothing was deleted."""


class CorruptMaskError(MaskFileError):
    """A stored mask whose bytes no longer match their checksum or shapes."""


class MaskExistsError(MaskFileError):
    """A different mask is already stored under this task id."""


class FingerprintMismatchError(MaskFileError, ValueError):
    """A mask asked for on a base network other than the one it was learned on."""


class MaskNotFoundError(MaskFileError, KeyError):
    """No mask is stored under this task id."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])
