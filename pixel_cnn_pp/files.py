"""Writing a file so that a kill, a signal or a full disk leaves the old file or the new
one, never part of one: the one atomic write of the package (config.json, the history,
compressed files, samples)."""

import os


def write_atomically(path, write, mode='wb', **open_args):
    """write(f) on a temporary file beside `path` (path + '.tmp', which a run's clean-up
    removes after a kill), flushed to the disk, then renamed onto path. Whatever fails or
    interrupts it (BaseException: a signal's exception, a full disk) removes the temporary
    file and leaves an old file at path as it was. mode, open_args: those of open()."""
    tmp = path + '.tmp'
    try:
        with open(tmp, mode, **open_args) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_bytes(path, data):
    """The bytes `data` as the file at path, atomically."""
    write_atomically(path, lambda f: f.write(data))
