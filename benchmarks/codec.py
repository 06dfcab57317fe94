"""Seconds per batch for the codec's encode and decode against the fast sampler, and the
file's size against the model's ideal -log2 p(x).

    python benchmarks/codec.py                                   # paper size and small, random weights
    python benchmarks/codec.py --sizes= --checkpoint=save --images=test.npz   # a trained model

Prints JSON. Random-weight models code the fast sampler's own samples (images the model
finds likely; its weights as initialised on uniform noise); a --checkpoint codes the
first --num_images of --images (an .npz, a folder or tfds:NAME:SPLIT, as compress.py
reads them). Each is timed after a first batch that traces (reported apart): the fast
sampler (pixel_cnn_pp.sample), encode (compress with verify=False) and decode
(decompress), one batch each in --repeats rounds (medians, each round's in `rounds`);
`callback_seconds` is the time in the coder's Python callback (the pmfs, the range coder
and the call itself) within encode and decode.
"""

import json
import os
import sys
import time

from absl import app, flags
import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pixel_cnn_pp  # noqa: E402
from pixel_cnn_pp import PixelCNNPP, codec, data, scoring  # noqa: E402
from pixel_cnn_pp.sampling.coding import CodingPass  # noqa: E402

SIZES = {'paper': dict(nr_resnet=5, nr_filters=160, nr_logistic_mix=10),
         'small': dict(nr_resnet=2, nr_filters=64, nr_logistic_mix=5)}
flags.DEFINE_list('sizes', ['small', 'paper'], 'Random-weight model sizes to time: %s' % ', '.join(SIZES))
flags.DEFINE_string('checkpoint', None, 'Also a trained model (anything pixel_cnn_pp.load reads)')
flags.DEFINE_string('images', None, 'With --checkpoint: the images to code')
flags.DEFINE_boolean('ema', True, 'With --checkpoint: its Polyak-averaged weights (--noema: the raw ones)')
flags.DEFINE_integer('num_images', 16, 'With --checkpoint: how many of --images')
flags.DEFINE_integer('batch_size', 16, 'Images per batch')
flags.DEFINE_integer('repeats', 3, 'Rounds of sampler, encode and decode timed (medians)')
flags.DEFINE_integer('image_size', 32, 'Height and width (random-weight models)')
FLAGS = flags.FLAGS

_callback_seconds = [0.]
_call = CodingPass._call


def _timed_call(self, i, j, l):
    start = time.perf_counter()
    try:
        return _call(self, i, j, l)
    finally:
        _callback_seconds[0] += time.perf_counter() - start


CodingPass._call = _timed_call  # before any trace captures it


def timed(fn):
    _callback_seconds[0] = 0.
    start = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - start, 2), round(_callback_seconds[0], 2)


def bench(model, x, labels, sample_shape):
    """Times a batch of the sampler, encode and decode, after a first one of each, in
    --repeats rounds of the three (medians: the load of a shared machine moves them all);
    the sizes."""
    B = FLAGS.batch_size
    h = None if labels is None else tf.one_hot(labels[:B], model.num_labels)
    result = {}
    _, result['sampler_first_seconds'], _ = timed(lambda: pixel_cnn_pp.sample(model, B, h=h, seed=0,
                                                                            image_shape=sample_shape))
    samples = pixel_cnn_pp.sample(model, B, h=h, seed=1, image_shape=sample_shape) if x is None else None
    x = samples if x is None else x
    kw = dict(labels=labels, batch_size=B, verify=False)
    data, result['encode_first_seconds'], _ = timed(lambda: codec.compress(model, x, **kw))
    rounds = {k: [] for k in ('sampler', 'encode', 'encode_callback', 'decode', 'decode_callback')}
    for r in range(FLAGS.repeats):
        rounds['sampler'].append(timed(lambda: pixel_cnn_pp.sample(model, B, h=h, seed=2 + r,
                                                                   image_shape=sample_shape))[1])
        again, seconds, callback = timed(lambda: codec.compress(model, x, **kw))
        assert again == data
        rounds['encode'].append(seconds)
        rounds['encode_callback'].append(callback)
        back, seconds, callback = timed(lambda: codec.decompress(model, data))
        assert np.array_equal(back if labels is None else back[0], x)
        rounds['decode'].append(seconds)
        rounds['decode_callback'].append(callback)
    for k, v in rounds.items():
        result[k + '_seconds'] = round(float(np.median(v)), 2)
    result['rounds'] = rounds
    for name in ('encode', 'decode'):
        result[name + '_vs_sampler'] = round(float(np.median(  # round by round
            np.divide(rounds[name], rounds['sampler']))), 3)
        result[name + '_images_per_second'] = round(len(x) / result[name + '_seconds'], 3)
    hx = None if labels is None else tf.one_hot(labels, model.num_labels)
    ideal = -float(np.sum(scoring.log_prob(model, x, h=hx), dtype=np.float64)) / np.log(2.) / 8.
    if labels is not None:
        ideal += len(labels) * np.log2(model.num_labels) / 8.
    dims = x.size / 8.
    result.update(images=len(x), file_bytes=len(data), ideal_bytes=round(ideal, 1),
                  bytes_above_ideal=round(len(data) - ideal, 1),
                  percent_above_ideal=round(100. * (len(data) - ideal) / ideal, 4),
                  file_bits_per_dim=round(len(data) / dims, 4), ideal_bits_per_dim=round(ideal / dims, 4),
                  png_bits_per_dim=round(float(np.sum(scoring.png_bits(x))) / 8. / dims, 4))
    return result


def main(argv):
    del argv
    results = {'environment': {k: '.'.join(map(str, v)) if isinstance(v, tuple) else v
                               for k, v in codec.environment().items()}}
    for size in FLAGS.sizes:
        keras.utils.set_random_seed(0)
        shape = (FLAGS.image_size, FLAGS.image_size, 3)
        model = PixelCNNPP(dropout_p=0., **SIZES[size])
        model(np.random.default_rng(0).uniform(-1, 1, (16,) + shape).astype(np.float32), init=True)
        results[size] = dict(model=SIZES[size], image_size=FLAGS.image_size, batch_size=FLAGS.batch_size,
                             **bench(model, None, None, shape))
        print(json.dumps({size: results[size]}), file=sys.stderr)
    if FLAGS.checkpoint:
        model = pixel_cnn_pp.load(FLAGS.checkpoint, use_ema=FLAGS.ema)
        x, y, _ = data.read_images(FLAGS.images)
        x = x[:FLAGS.num_images]
        labels = None if not model.num_labels else y[:FLAGS.num_images].astype(np.int64)
        results['checkpoint'] = dict(path=getattr(model, 'checkpoint_path', FLAGS.checkpoint),
                                     images_spec=FLAGS.images, batch_size=FLAGS.batch_size,
                                     **bench(model, x, labels, x.shape[1:]))
    print(json.dumps(results, indent=1))


if __name__ == '__main__':
    app.run(main)
