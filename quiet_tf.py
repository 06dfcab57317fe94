"""Imported first by every script (before tensorflow, which `import pixel_cnn_pp` imports):
imports TensorFlow without its start-up logs, which say nothing a user can act on.

- TF_CPP_MIN_LOG_LEVEL=2 hides TensorFlow's C++ INFO and WARNING lines (such as tf.data's
  "GeneratorDatasetOp::Dataset will not be optimized"); its errors still print.
- The lines that library loading writes before that setting can act (absl's "All log
  messages before absl::InitializeLog()", the oneDNN and CUDA-driver notices, the CPU
  feature notice) and CUDA's "failed call to cuInit" on a machine without a GPU are dropped;
  every other line written during the import (an error, a Python warning) is kept.

A user who sets TF_CPP_MIN_LOG_LEVEL (0 shows everything) gets TensorFlow's own behaviour,
unfiltered. The library itself (pixel_cnn_pp) never silences TensorFlow: only the scripts
import this module."""

import os
import re
import sys
import tempfile

# A line of TensorFlow's start-up that tells a user nothing: absl/glog INFO and WARNING
# lines, absl's notice about its own initialisation, the continuation of the CPU feature
# notice, and the cuInit failure of every machine without a GPU driver (the scripts say
# when no GPU is found where it matters: train.py).
NOISE = re.compile(r'[IW]\d{4} \d\d:\d\d:\d\d|'
                   r'WARNING: All log messages before absl::InitializeLog\(\)|'
                   r'To enable the following instructions: .* rebuild TensorFlow|'
                   r'E\d{4} .*failed call to cuInit')


def keep(line):
    """Whether a line TensorFlow wrote to stderr while importing is shown."""
    return not NOISE.match(line)


def import_tensorflow():
    """Imports tensorflow (and lists the GPUs, which initialises CUDA) with stderr captured
    at the file-descriptor level, then writes back the lines worth keeping. Returns the
    visible GPUs."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile('w+b') as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
            gpus = tf.config.list_physical_devices('GPU')
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode('utf-8', 'replace').splitlines(keepends=True)
            sys.stderr.write(''.join(line for line in lines if keep(line)))
            sys.stderr.flush()
    return gpus


if 'TF_CPP_MIN_LOG_LEVEL' in os.environ:
    import tensorflow  # noqa: F401  (the user chose TensorFlow's log level)
    GPUS = tensorflow.config.list_physical_devices('GPU')
else:
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'
    GPUS = import_tensorflow()
