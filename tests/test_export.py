"""export.py: a SavedModel whose log_prob and sample signatures work in a process that
cannot import pixel_cnn_pp, a .keras file, and clean failures."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import pixel_cnn_pp
from conftest import FIXTURES, run_in_process, run_script

# the smallest official config with labels (relu: a checkpoint cannot tell it, so a flag says it)
OFFICIAL = os.path.join(FIXTURES, 'official_configs', 'relu_r1_f8_m2_cond4')

# Run with -I (isolated: no PYTHONPATH, no current folder on sys.path) from another folder,
# and with pixel_cnn_pp made unimportable (the README's install puts it in site-packages):
# only TensorFlow reads the SavedModel, and any attempt to import the package fails.
CONSUMER = '''
import json, sys
sys.modules['pixel_cnn_pp'] = None  # import pixel_cnn_pp: ImportError
import numpy as np
import tensorflow as tf
saved = tf.saved_model.load(sys.argv[1])
ref = np.load(sys.argv[2])
K, x = int(ref['num_labels']), ref['x_uint8']
H, W, C = x.shape[1:]
h = lambda y: {'h': tf.one_hot(y, K)} if K else {}
y = ref['y'] if K else np.zeros(len(x), np.int64)
scores = saved.signatures['log_prob'](images=tf.constant(x), **h(y))
one = saved.signatures['log_prob'](images=tf.constant(x[:1]), **h(y[:1]))
samples = {n: saved.signatures['sample'](num=tf.constant(n), seed=tf.constant(5), **h(np.arange(n) % max(K, 1)))
           for n in (1, 3)}
errors = {}
for name, call in [
        ('30x30', lambda: saved.signatures['log_prob'](images=tf.zeros((2, 30, 30, C), tf.uint8), **h([0, 1]))),
        ('channels', lambda: saved.signatures['log_prob'](images=tf.zeros((2, H, W, 4 - C), tf.uint8), **h([0, 1]))),
        ('float', lambda: saved.signatures['log_prob'](images=tf.zeros((2, H, W, C)), **h([0, 1]))),
        ('h rows', lambda: saved.signatures['log_prob'](images=tf.zeros((2, H, W, C), tf.uint8), **h([0]))),
        ('num', lambda: saved.signatures['sample'](num=tf.constant(-1), seed=tf.constant(5), **h([]))),
        ('sample h', lambda: saved.signatures['sample'](num=tf.constant(3), seed=tf.constant(5), **h([0])))]:
    if not K and name in ('h rows', 'sample h'):
        continue
    try:
        call()
        errors[name] = None
    except tf.errors.InvalidArgumentError as e:
        errors[name] = e.message
print(json.dumps({'nats': scores['nats'].numpy().tolist(), 'bits_per_dim': scores['bits_per_dim'].numpy().tolist(),
                  'one': one['nats'].numpy().tolist(), 'errors': errors,
                  'samples': {n: s['images'].numpy().tolist() for n, s in samples.items()},
                  'dtype': samples[3]['images'].dtype.name}))
'''


ONE_WORKER = pytest.mark.xdist_group('export_exported')  # the tests of one export, built once

# The models exported: the default, unconditional model (the official small checkpoint, raw
# weights: --noema) and a class-conditional one (its EMA weights, the default), each with its
# flags, the official per-image losses of its weights and the labels of its reference images.
MODELS = {
    'unconditional': (os.path.join(FIXTURES, 'official_small', 'params_cifar.ckpt'), ['--noema'],
                      os.path.join(FIXTURES, 'official_small', 'ref.npz'), 'loss_each', {}),
    'conditional': (os.path.join(OFFICIAL, 'params.ckpt'), ['--image_size=8,12', '--resnet_nonlinearity=relu'],
                    os.path.join(OFFICIAL, 'ref.npz'), 'loss_each_ema',
                    dict(image_shape=(8, 12), resnet_nonlinearity='relu')),
}


def reference(kind):
    """(uint8 images, labels or None, the official per-image losses) of a MODELS entry."""
    ref = np.load(MODELS[kind][2])
    x = ref['x_uint8'] if 'x_uint8' in ref else np.round(ref['x'] * 127.5 + 127.5).astype(np.uint8)
    return x, ref['y'] if 'y' in ref else None, ref[MODELS[kind][3]][:len(x)]


@pytest.fixture(scope='module', params=sorted(MODELS))
def exported(request, tmp_path_factory):
    """export.py's SavedModel of a MODELS entry, used by a TensorFlow-only process: (kind, what
    it printed as JSON)."""
    kind = request.param
    ckpt, flags, _, _, _ = MODELS[kind]
    d = tmp_path_factory.mktemp('export_' + kind)
    out = run_script('export.py', '--checkpoint=' + ckpt, *flags, '--out=%s' % (d / 'saved'))
    assert out.returncode == 0, out.stderr
    assert 'wrote %s (saved_model, %s weights' % (d / 'saved', 'raw' if '--noema' in flags else 'EMA') in out.stdout
    x, y, _ = reference(kind)
    np.savez(d / 'ref.npz', x_uint8=x, num_labels=0 if y is None else int(y.max()) + 1,
             **({} if y is None else {'y': y}))
    consumer = subprocess.run([sys.executable, '-I', '-c', CONSUMER, str(d / 'saved'), str(d / 'ref.npz')],
                              cwd=str(d), capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    assert consumer.returncode == 0, consumer.stderr
    return kind, json.loads(consumer.stdout.strip().splitlines()[-1])


@ONE_WORKER
def test_saved_model_log_prob_is_the_official_per_image_loss(exported):
    kind, result = exported
    x, _, official_loss = reference(kind)
    nats = np.array(result['nats'])
    np.testing.assert_allclose(-nats, official_loss, rtol=1e-4)
    assert np.all(nats <= 0)
    dims = np.prod(x.shape[1:])
    np.testing.assert_allclose(result['bits_per_dim'], -nats / (np.log(2) * dims), rtol=1e-6)
    np.testing.assert_allclose(result['one'], nats[:1], rtol=1e-6)  # any batch size


@ONE_WORKER
def test_saved_model_samples_as_the_python_sampler(exported):
    """Any batch size; the same images as pixel_cnn_pp.sample with the same seed (up to float
    round-off: the SavedModel runs the rows in one graph)."""
    kind, result = exported
    ckpt, flags, _, _, overrides = MODELS[kind]
    model = pixel_cnn_pp.load(ckpt, use_ema='--noema' not in flags, **overrides)
    assert result['dtype'] == 'uint8'
    for n in ('1', '3'):
        images = np.array(result['samples'][n], np.uint8)
        h = np.eye(4, dtype=np.float32)[np.arange(int(n)) % 4] if model.num_labels else None
        expected = pixel_cnn_pp.sample(model, int(n), h=h, seed=5)
        assert images.shape == (int(n),) + model.image_shape
        assert np.mean(images != expected) <= 1e-3


@ONE_WORKER
def test_saved_model_says_what_its_signatures_take(exported):
    """Wrong shapes: one assertion line saying what the signature takes and what it got
    (not 37 lines of `Incompatible shapes`); a wrong dtype: TensorFlow's one line."""
    kind, result = exported
    errors = result['errors']
    if kind == 'unconditional':
        takes = 'assertion failed: [log_prob takes images: uint8 [N, H, W, 3] with H and W multiples of 4;] [got images of shape] '
        assert takes + '[2 30 30 3]\n' in errors['30x30']
        assert takes + '[2 32 32 1]\n' in errors['channels']
        assert 'assertion failed: [sample takes num: int32 >= 0, seed: int32;] [got num] [-1]\n' in errors['num']
        assert set(errors) == {'30x30', 'channels', 'float', 'num'}
    else:
        takes = ('assertion failed: [log_prob takes images: uint8 [N, H, W, 3] with H and W multiples of 4 and '
                 'h: float32 [N, 4] (one-hot labels, a row per image);] [got images of shape] ')
        assert takes + '[2 30 30 3] [and h of shape] [2 4]' in errors['30x30']
        assert takes + '[2 8 12 1] [and h of shape] [2 4]' in errors['channels']
        assert takes + '[2 8 12 3] [and h of shape] [1 4]' in errors['h rows']
        sample = ('assertion failed: [sample takes num: int32 >= 0, seed: int32, h: float32 [num, 4] (one-hot '
                  'labels, a row per sample);] [got num] ')
        assert sample + '[-1] [and h of shape] [0 4]' in errors['num']
        assert sample + '[3] [and h of shape] [1 4]' in errors['sample h']
    assert 'was expected to be a uint8 tensor but is a float tensor' in errors['float']
    assert all(len(e.splitlines()) <= 6 for e in errors.values())


def test_keras_format_and_raw_weights(tmp_path):
    ckpt = os.path.join(FIXTURES, 'official_small', 'params_cifar.ckpt')
    run_in_process('export.py', '--checkpoint=' + ckpt, '--out=%s' % (tmp_path / 'm.keras'),
                   '--format=keras', '--noema', '--image_size=8,12', status=0)
    loaded = keras.models.load_model(str(tmp_path / 'm.keras'))
    assert loaded.image_shape == (8, 12, 3)
    ref = np.load(os.path.join(FIXTURES, 'official_small', 'ref.npz'))
    np.testing.assert_array_equal(loaded(ref['x'][:2]),
                                  pixel_cnn_pp.load(ckpt, use_ema=False)(ref['x'][:2]))


@pytest.mark.parametrize('args, message', [
    ([], '--checkpoint and --out are required'),
    (['--checkpoint=/nonexistent/ckpt', '--out={d}/x'], '/nonexistent/ckpt: no such checkpoint'),
    (['--checkpoint={ckpt}', '--out={d}/x', '--format=keras'], 'name ends in .keras'),
    (['--checkpoint={ckpt}', '--out={d}/x', '--nr_filters=64'], '--nr_filters=64 was given, but the checkpoint'),
    (['--checkpoint={ckpt}', '--out={d}/x', '--image_size=30'], '--image_size must be H,W or one number'),
])
def test_bad_input_is_a_short_message_and_writes_nothing(tmp_path, args, message):
    ckpt = os.path.join(FIXTURES, 'official_small', 'params_cifar.ckpt')
    _, _, err = run_in_process('export.py', *[a.format(d=tmp_path, ckpt=ckpt) for a in args], status=2)
    assert err.splitlines() == [err.splitlines()[0], 'Run with --help for the flags.']  # two lines
    assert err.startswith('export.py: error: ') and message in err.splitlines()[0]
    assert os.listdir(tmp_path) == []


def test_existing_out_is_refused(tmp_path):
    (tmp_path / 'x').mkdir()
    _, _, err = run_in_process('export.py', '--checkpoint=' + os.path.join(FIXTURES, 'official_small', 'params_cifar.ckpt'),
                               '--out=%s' % (tmp_path / 'x'), status=2)
    assert 'already exists' in err
    assert os.listdir(tmp_path) == ['x'] and os.listdir(tmp_path / 'x') == []
