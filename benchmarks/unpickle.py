"""What reading a data set's pickle batches through the restricted unpickler
(datafiles.load_pickle, which refuses anything but arrays, lists, dicts, str and numbers)
costs against plain pickle.load, on synthetic batches of the real files' sizes: a CIFAR-10
batch (10000 x 3072 uint8, labels, file names) and an Imagenet32 training batch
(128116 x 3072 uint8, labels, a mean), each as a protocol-2 pickle (the format of the
published files) and a protocol-4 one.

    python benchmarks/unpickle.py                 # both sizes, best of 5 reads
    python benchmarks/unpickle.py --nokinds=imagenet32

Prints JSON: per file, its size and the best read time of each way, and their ratio.
"""

import json
import os
import pickle
import sys
import tempfile
import time

from absl import app, flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pixel_cnn_pp import datafiles  # noqa: E402

flags.DEFINE_list('kinds', ['cifar10', 'imagenet32'], 'Which batches to time')
flags.DEFINE_integer('repeats', 5, 'Reads of each way; the best is reported', lower_bound=1)
FLAGS = flags.FLAGS


def batch(kind, rng):
    if kind == 'cifar10':
        return {'batch_label': 'training batch 1 of 5', 'labels': rng.integers(0, 10, 10000).tolist(),
                'data': rng.integers(0, 256, (10000, 3072), dtype=np.uint8),
                'filenames': ['image_%05d.png' % i for i in range(10000)]}
    return {'data': rng.integers(0, 256, (128116, 3072), dtype=np.uint8),
            'labels': rng.integers(1, 1001, 128116).tolist(), 'mean': rng.random(3072)}


def best(read, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read()
        times.append(time.perf_counter() - start)
    return min(times)


def plain_load(path):
    with open(path, 'rb') as f:
        return pickle.load(f, encoding='latin1')


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in FLAGS.kinds:
            value = batch(kind, rng)
            for protocol in (2, 4):
                path = os.path.join(tmp, '%s_%d' % (kind, protocol))
                with open(path, 'wb') as f:
                    pickle.dump(value, f, protocol=protocol)
                plain = best(lambda: plain_load(path), FLAGS.repeats)
                restricted = best(lambda: datafiles.load_pickle(path), FLAGS.repeats)
                results.append({'batch': kind, 'protocol': protocol, 'megabytes': round(os.path.getsize(path) / 1e6, 1),
                                'plain_seconds': round(plain, 4), 'restricted_seconds': round(restricted, 4),
                                'ratio': round(restricted / plain, 3)})
                os.remove(path)
    print(json.dumps(results, indent=1))


if __name__ == '__main__':
    app.run(main)
