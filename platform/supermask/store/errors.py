"""Errors raised by the mask store; each message names the file and the remedy."""

from __future__ import annotations

from pathlib import Path


class MaskFileError(Exception):
    """Base class of every mask-store error."""


class NotAMaskFileError(MaskFileError, ValueError):
    """A path that exists but is not a supermask mask file (or journal); it is never touched."""


class OldFormatError(MaskFileError):
    """A mask file of an older format; `supermask store migrate` rewrites it, keeping every mask."""

    @classmethod
    def of(cls, path: Path, version: int, current: int) -> OldFormatError:
        """The error for the mask file at `path` (a snapshot, or the one a journal belongs to)."""
        return cls(
            f"{path} is a version-{version} supermask mask file (its checksums cover the mask bits only); "
            f"this supermask reads version {current}, which checks every field of every record. Nothing "
            f"was changed. Run `supermask store migrate {path}` (or `supermask store migrate {path.parent}` "
            f"for every file of its store) to verify its masks and rewrite them as version {current}, "
            "keeping every mask"
        )


class WrongKindError(MaskFileError, ValueError):
    """A stored record of another kind (e.g. trained weights) asked for as a mask."""


class NotSupportedError(MaskFileError, ValueError):
    """A call a store kind cannot answer (e.g. taking a pattern back out of a Hopfield reservoir)."""


class StoreLockedError(MaskFileError):
    """Another handle already owns the shard file for writing."""


class CorruptJournalError(MaskFileError):
    """A damaged journal record that is not a torn tail; nothing was deleted."""


class CorruptMaskError(MaskFileError):
    """A stored mask whose record no longer matches its checksum (or whose shapes do not fit its bits)."""


class MaskExistsError(MaskFileError):
    """A different mask is already stored under this task id."""


class FingerprintMismatchError(MaskFileError, ValueError):
    """A mask asked for on a base network other than the one it was learned on."""


class MaskNotFoundError(MaskFileError, KeyError):
    """No mask is stored under this task id."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])
