"""Images per second that train.py's input pipeline delivers on its own (no model), to
check that it cannot starve the training step (which takes 1 to 12 images/s on a 2-core
CPU; compare with what your GPUs train at).

    python benchmarks/input_pipeline.py                       # CIFAR-10 size, one replica
    python benchmarks/input_pipeline.py --replicas=8          # 8 logical CPU replicas
    python benchmarks/input_pipeline.py --num_images=1281149  # ImageNet 32x32's size
    python benchmarks/input_pipeline.py --source=folder       # 50,000 PNG files, decoded as read
    python benchmarks/input_pipeline.py --source=folder --folder=DIR --cache  # your folder

--source=folder: a folder of image files (--folder, or --num_images synthetic 32x32 PNGs it
writes into a temporary folder), read as train.py reads --data_set=folder (data.load: the
listing and every file's header; then each batch's files read and decoded in the pipeline).
Prints JSON: the seconds of data.load (the files evicted from the OS page cache before it,
--cold), images/s of the first pass (epoch 0, building the pipeline included) and of the
--epochs later ones (each a new permutation, as training), the peak memory above start;
with --cache, the seconds to build the cache (every file decoded once) and images/s of
epochs read from it.

Prints JSON: images/s over --steps global batches after the first 20, which include
building the pipeline (reported apart as first_batches_seconds); the data's size and the
process's peak memory above what it held before the data existed, and their ratio; and
epoch_end_seconds, the longest of --epochs ends of an epoch (its last batches and the
deletion of its iterator) after a pause of --pause seconds, as a slow training step makes.
(tf.distribute's own input iterators, which data.py no longer uses, waited there for the
tf.data autotuner: up to a minute, at random.)
"""

import contextlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time

from absl import app, flags
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pixel_cnn_pp import data as data_lib  # noqa: E402

flags.DEFINE_enum('source', 'arrays', ['arrays', 'folder'], 'arrays: uint8 arrays in memory (cifar, npz, '
                  'imagenet); folder: image files (--data_set=folder)')
flags.DEFINE_string('folder', None, 'With --source=folder: the folder to read (default: write '
                    '--num_images synthetic PNGs of --image_size into a temporary folder)')
flags.DEFINE_boolean('cache', False, 'With --source=folder: also time --cache (a .npy beside the folder\'s '
                     'temporary copy, removed after)')
flags.DEFINE_boolean('cold', True, 'With --source=folder: evict the files from the OS page cache first '
                     '(posix_fadvise), as after a reboot')
flags.DEFINE_integer('num_images', 50000, 'Synthetic uint8 training images')
flags.DEFINE_integer('image_size', 32, 'Height and width')
flags.DEFINE_integer('batch_size', 16, 'Images per replica per step')
flags.DEFINE_integer('replicas', 1, 'Replicas of a MirroredStrategy on logical CPU devices')
flags.DEFINE_integer('steps', 500, 'Global batches timed', lower_bound=1)
flags.DEFINE_integer('epochs', 3, 'Epoch ends timed', lower_bound=0)
flags.DEFINE_float('pause', 8., "Seconds between an epoch's first batch and the rest", lower_bound=0.)
FLAGS = flags.FLAGS
FIRST = 20


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def write_folder(folder, n, size):
    """n random size x size RGB PNGs (random pixels: about 3 KB each at 32x32, as large as a
    real photo of that size) as folder/train/NNNNN.png."""
    os.makedirs(os.path.join(folder, 'train'))
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        with open(os.path.join(folder, 'train', '%06d.png' % i), 'wb') as f:
            f.write(tf.io.encode_png(image).numpy())


def evict(folder):
    """Drops the files below folder from the OS page cache (Linux; elsewhere nothing)."""
    if not hasattr(os, 'posix_fadvise'):
        return False
    for root, _, names in os.walk(folder):
        for name in names:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return True


def epoch_rate(strategy, data, epoch):
    """Images/s of one whole training epoch of data (its batches gathered, nothing else)."""
    began, n = time.perf_counter(), 0
    for batch in data_lib.train_batches(strategy, data, FLAGS.batch_size, seed=1, epoch=epoch):
        n += sum(int(t.shape[0]) for t in strategy.experimental_local_results(batch[0]))
    return n / (time.perf_counter() - began)


def folder_benchmark(strategy):
    """--source=folder."""
    work = tempfile.mkdtemp(prefix='input_pipeline_')
    try:
        folder = FLAGS.folder
        if folder is None:
            folder = os.path.join(work, 'images')
            began = time.perf_counter()
            write_folder(folder, FLAGS.num_images, FLAGS.image_size)
            print('wrote %d PNG files of %dx%d in %.1f s' % (FLAGS.num_images, FLAGS.image_size, FLAGS.image_size,
                                                             time.perf_counter() - began), file=sys.stderr)
        evicted = FLAGS.cold and evict(folder)
        before = peak_rss_bytes()
        began = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            data = data_lib.load('folder', folder, held_out=0.02)
        load_seconds = time.perf_counter() - began
        first = epoch_rate(strategy, data, 0)
        later = [epoch_rate(strategy, data, e) for e in range(1, 1 + max(FLAGS.epochs, 1))]
        out = dict(source='folder', folder=FLAGS.folder or 'synthetic %dx%d PNGs' % ((FLAGS.image_size,) * 2),
                   num_images=len(data.train_x), image_shape=list(data.train_x.shape[1:]), replicas=FLAGS.replicas,
                   global_batch=FLAGS.batch_size * FLAGS.replicas, cold_start=bool(evicted),
                   load_seconds=round(load_seconds, 2), first_pass_images_per_second=round(first),
                   later_epochs_images_per_second=[round(r) for r in later])
        if FLAGS.cache:
            began = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):
                cached = data_lib.load('folder', folder, held_out=0.02, cache=os.path.join(work, 'cache.npy'),
                                       progress_bar=False)
            out['cache_build_seconds'] = round(time.perf_counter() - began, 2)
            out['cached_epochs_images_per_second'] = [round(epoch_rate(strategy, cached, e))
                                                      for e in range(max(FLAGS.epochs, 1))]
        out['peak_memory_above_start_gb'] = round((peak_rss_bytes() - before) / 1e9, 3)
        print(json.dumps(out, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv):
    del argv
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.replicas)
    strategy = tf.distribute.MirroredStrategy(
        ['/cpu:%d' % i for i in range(FLAGS.replicas)]) if FLAGS.replicas > 1 else \
        tf.distribute.OneDeviceStrategy('/cpu:0')
    if FLAGS.source == 'folder':
        return folder_benchmark(strategy)
    n, s = FLAGS.num_images, FLAGS.image_size
    global_batch = FLAGS.batch_size * FLAGS.replicas
    if FLAGS.num_images // global_batch < FIRST + FLAGS.steps:
        raise app.UsageError('--num_images=%d makes %d batches of %d; the benchmark needs '
                             '--steps + %d = %d' % (n, n // global_batch, global_batch, FIRST,
                                                    FLAGS.steps + FIRST))
    # TensorFlow's own memory first, so what follows is the data's and the pipeline's
    for _ in data_lib.train_batches(strategy, data_lib.Data(np.zeros((global_batch, s, s, 3), np.uint8), None,
                                                            np.zeros((1, s, s, 3), np.uint8), None, 0),
                                    FLAGS.batch_size, seed=1, epoch=0):
        pass
    before = peak_rss_bytes()
    rng = np.random.default_rng(0)
    data = data_lib.Data(rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8),
                         rng.integers(0, 10, n).astype(np.int32),
                         np.zeros((1, s, s, 3), np.uint8), np.zeros(1, np.int32), 10)
    start = time.perf_counter()
    batches = data_lib.train_batches(strategy, data, FLAGS.batch_size, seed=1, epoch=0,
                                     max_steps=FIRST + FLAGS.steps)
    for k, _ in enumerate(batches, start=1):
        if k == FIRST:
            first = time.perf_counter()
    done = time.perf_counter()
    data_bytes = data.train_x.nbytes + data.train_y.nbytes
    ends = []
    for epoch in range(FLAGS.epochs):
        batches = iter(data_lib.train_batches(strategy, data, FLAGS.batch_size, seed=1, epoch=epoch, max_steps=2))
        next(batches)
        time.sleep(FLAGS.pause)
        began = time.perf_counter()
        for _ in batches:
            pass
        del batches
        ends.append(time.perf_counter() - began)
    peak = peak_rss_bytes() - before
    print(json.dumps(dict(replicas=FLAGS.replicas, global_batch=global_batch, num_images=n,
                          data_gb=round(data_bytes / 1e9, 3), peak_memory_above_start_gb=round(peak / 1e9, 3),
                          peak_over_data=round(peak / data_bytes, 3),
                          first_batches_seconds=round(first - start, 2),
                          images_per_second=round((k - FIRST) * global_batch / (done - first)),
                          epoch_end_seconds=round(max(ends), 3) if ends else None),
                     indent=1))


if __name__ == '__main__':
    app.run(main)
