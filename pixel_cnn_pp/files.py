"""Leaving files consistent whatever fails: writing a file so that a kill, a signal or a
full disk leaves the old file or the new one, never part of one (the one atomic write of
the package: config.json, the history, compressed files, samples), and removing what a
failed operation created in a folder (a first training run's save_dir, a download into a
data_dir)."""

import os
import shutil


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


class Created:
    """What an operation is about to create in `folder`, remembered so that if it fails
    remove() leaves the folder as it was found: the folder itself and its missing parents
    if it does not exist yet, else the names new at its top (deep=False) or anywhere inside
    it (deep=True: also what appears in its existing subfolders)."""

    def __init__(self, folder, deep=False):
        self.folder, self.deep = folder, deep
        self.missing = None  # the outermost of folder and its parents that is no folder yet
        path = os.path.abspath(folder)
        while not os.path.isdir(path):  # (rmtree leaves a file there alone)
            self.missing, path = path, os.path.dirname(path)
        self.existed = self._paths() if self.missing is None else set()

    def _paths(self):
        """The paths in folder, relative to it."""
        if not self.deep:
            return set(os.listdir(self.folder))
        return {os.path.relpath(os.path.join(root, name), self.folder)
                for root, dirs, names in os.walk(self.folder) for name in dirs + names}

    def remove(self):
        if self.missing is not None:
            shutil.rmtree(self.missing, ignore_errors=True)
            return
        if not os.path.isdir(self.folder):  # removed by someone else meanwhile
            return
        new = self._paths() - self.existed
        for name in new:
            if os.path.dirname(name) in new:  # goes with its new folder
                continue
            path = os.path.join(self.folder, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
