"""The console a program using this package meets: TensorFlow imported without its start-up
notices, and (for the scripts) output that a dead terminal or pipe cannot turn into a failure.

Imported first by pixel_cnn_pp/__init__.py. If TensorFlow is not imported yet, it is imported
here with stderr captured at the file-descriptor level, then the lines worth keeping written
back: dropped are only the notices of library loading that no log level hides (absl's "All
log messages before absl::InitializeLog()", the oneDNN, CUDA-driver and CPU-feature notices,
each printed twice by TensorFlow 2.21) and CUDA's "failed call to cuInit" on a machine without
a GPU; an error, a Python warning, anything else is kept. TF_CPP_MIN_LOG_LEVEL=0 shows
everything, unfiltered. The scripts also set TF_CPP_MIN_LOG_LEVEL=2 before importing the
package (TensorFlow's C++ warnings hidden, its errors kept)."""

import errno
import os
import re
import sys
import tempfile

# A line of TensorFlow's start-up that tells a user nothing: absl/glog INFO and WARNING
# lines, absl's notice about its own initialisation, the continuation of the CPU feature
# notice, and the cuInit failure of every machine without a GPU driver (train.py says when
# no GPU is found where it matters).
NOISE = re.compile(r'[IW]\d{4} \d\d:\d\d:\d\d|'
                   r'WARNING: All log messages before absl::InitializeLog\(\)|'
                   r'To enable the following instructions: .* rebuild TensorFlow|'
                   r'E\d{4} .*failed call to cuInit')


def keep(line):
    """Whether a line TensorFlow wrote to stderr while importing is shown."""
    return not NOISE.match(line)


def _import_tensorflow():
    """Imports tensorflow (and lists the GPUs, which initialises CUDA) with stderr captured
    at the file-descriptor level, then writes back the lines worth keeping."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile('w+b') as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
            tf.config.list_physical_devices('GPU')
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode('utf-8', 'replace').splitlines(keepends=True)
            sys.stderr.write(''.join(line for line in lines if keep(line)))
            sys.stderr.flush()


if 'tensorflow' not in sys.modules and os.environ.get('TF_CPP_MIN_LOG_LEVEL') != '0':
    _import_tensorflow()


# ---------------------------------------------------------------------- output that cannot fail

# What writing to a console that is gone raises: a pipe whose reader exited (`| tee` after a
# Ctrl-C to the whole pipeline), a terminal that hung up.
GONE = (errno.EPIPE, errno.EIO)


class Survivor:
    """A text stream (sys.stdout or sys.stderr) whose write and flush never fail because the
    console is gone: the first such failure points the stream's file descriptor at /dev/null
    (so that TensorFlow's own writes and the interpreter's last flush find nothing wrong
    either) and later output is dropped. Everything else is the stream's own."""

    def __init__(self, stream):
        self._stream = stream
        self.gone = False

    def _guarded(self, call, *args, fallback=None):
        try:
            return call(*args)
        except OSError as e:
            if e.errno not in GONE:
                raise
        self.gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
            self._stream.flush()  # what the stream still buffers, to /dev/null now
        except (OSError, ValueError):  # a stream without a file descriptor
            pass
        return fallback

    def write(self, text):
        return self._guarded(self._stream.write, text, fallback=len(text))

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        return self._guarded(self._stream.flush)

    def __getattr__(self, name):
        return getattr(self._stream, name)


class surviving_output:
    """Within it, sys.stdout and sys.stderr are Survivors; the streams of before come back
    after, flushed (a console gone by then is found and diverted here, not by the
    interpreter's last flush, which would end the process with status 120)."""

    def __enter__(self):
        self.saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = Survivor(sys.stdout), Survivor(sys.stderr)
        return self

    def __exit__(self, *exc):
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = self.saved
