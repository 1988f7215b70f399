"""Writing files so that a failure never leaves a half-written or lost file."""

import contextlib
import os
import re
import secrets

_TEMPORARY = re.compile(r"\.[0-9a-f]{12}\.tmp\..+")


def is_temporary(name):
    """Whether a file name is one of `atomic_path`'s temporaries (left by a crash)."""
    return bool(_TEMPORARY.fullmatch(os.path.basename(name)))


@contextlib.contextmanager
def atomic_path(path, *, overwrite=True):
    """Yield a temporary path beside ``path``; move it into place on success.

    The temporary name is prefixed, not suffixed, so that writers that pick a
    format from the suffix (``.fits.gz``, ``.ecsv``, ``.npy``) still see it.
    With ``overwrite=False`` the final step cannot clobber a file that
    appeared in the meantime.

    Raises
    ------
    FileExistsError
        If ``overwrite`` is False and ``path`` exists.
    """
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{secrets.token_hex(6)}.tmp.{base}")
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                # link() refuses to replace a file, which replace() would do silently.
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
            except OSError:  # no hard links on this file system
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
