"""Writing files so that a failure never leaves a half-written or lost file."""

import contextlib
import os
import re
import secrets
import stat

_TEMPORARY = re.compile(r"\.[0-9a-f]{12}\.tmp\..+")


def is_temporary(name):
    """Whether a file name is one of `atomic_path`'s temporaries (left by a crash)."""
    return bool(_TEMPORARY.fullmatch(os.path.basename(name)))


def check_new(path, overwrite, hint="pass overwrite=True to replace it"):
    """Refuse, before any work, to replace an existing ``path`` unless ``overwrite``.

    The one "file exists" check of the package; ``hint`` says how to allow
    it (the command line says ``--overwrite``).

    Raises
    ------
    FileExistsError
    """
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{os.fspath(path)} already exists; {hint}")


@contextlib.contextmanager
def atomic_path(path, *, overwrite=True):
    """Yield a temporary path beside ``path``; move it into place on success.

    The temporary name is prefixed, not suffixed, so that writers that pick a
    format from the suffix (``.fits.gz``, ``.ecsv``, ``.npy``) still see it.
    With ``overwrite=False`` the final step cannot clobber a file that
    appeared in the meantime. A file that is replaced keeps its permissions,
    and a symbolic link is written through: its target is replaced and the
    link stays. Errors name ``path``, never the temporary.

    Raises
    ------
    FileExistsError
        If ``overwrite`` is False and ``path`` exists.
    OSError
        If writing fails, naming ``path``.
    """
    path = os.fspath(path)
    check_new(path, overwrite)
    # Replacing a link would turn it into a plain file and leave its target stale.
    target = os.path.realpath(path) if os.path.islink(path) else os.path.abspath(path)
    directory, base = os.path.split(target)
    tmp = os.path.join(directory, f".{secrets.token_hex(6)}.tmp.{base}")
    try:
        yield tmp
        if os.path.exists(target):
            # A writer creates the temporary with the default mode; keep the user's.
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        if overwrite:
            os.replace(tmp, target)
        else:
            try:
                # link() refuses to replace a file, which replace() would do silently.
                os.link(tmp, target)
            except FileExistsError:
                raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
            except OSError:  # no hard links on this file system
                os.replace(tmp, target)
    except OSError as exc:
        if tmp in (exc.filename, exc.filename2) or tmp in str(exc):
            raise _naming(exc, tmp, path) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _naming(exc, tmp, path):
    """``exc`` (an OSError) reworded to name the user's ``path`` instead of the temporary."""
    if exc.errno is not None and exc.strerror:
        # OSError(errno, ...) picks the subclass (PermissionError, ...) from the errno.
        return OSError(exc.errno, exc.strerror, path)
    return type(exc)(str(exc).replace(tmp, path).replace(os.path.basename(tmp), os.path.basename(path)))
