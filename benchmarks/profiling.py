"""What the benchmarks share: op time by op type from a tf.profiler trace, and peak memory."""

import collections
import glob
import os
import resource
import tempfile

import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2


def op_time_by_type(fn):
    """{op type: seconds} of TensorFlow ops while fn() runs, summed over the executor
    threads of a tf.profiler trace (threads overlap, so the sum can exceed the wall time)."""
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        fn()
        tf.profiler.experimental.stop()
        times = collections.Counter()
        for path in glob.glob(os.path.join(logdir, 'plugins', 'profile', '*', '*.xplane.pb')):
            space = xplane_pb2.XSpace()
            with open(path, 'rb') as f:
                space.ParseFromString(f.read())
            for plane in space.planes:
                for line in plane.lines:
                    for event in line.events:
                        name, _, op_type = plane.event_metadata[event.metadata_id].name.rpartition(':')
                        if name and not name.endswith(':') and op_type.isidentifier():
                            times[op_type] += event.duration_ps * 1e-12  # TF ops: "op_name:OpType"
    return times


def peak_memory(device):
    """(peak resident memory of the process, peak of the device's tensors) in GB; the CPU
    reports the latter only under TF_CPU_ALLOCATOR_USE_BFC=true, set before TensorFlow starts."""
    return (round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2),
            round(tf.config.experimental.get_memory_info(device.strip('/').upper())['peak'] / 2 ** 30, 2))
