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
# so pixel_cnn_pp cannot be imported: only TensorFlow reads the SavedModel.
CONSUMER = '''
import json, sys
import numpy as np
import tensorflow as tf
try:
    import pixel_cnn_pp
    sys.exit('pixel_cnn_pp should not be importable here')
except ImportError:
    pass
saved = tf.saved_model.load(sys.argv[1])
ref = np.load(sys.argv[2])
K = int(ref['num_labels'])
h = lambda y: {'h': tf.one_hot(y, K)} if K else {}
scores = saved.signatures['log_prob'](images=tf.constant(ref['x_uint8']), **h(ref['y'] if K else None))
one = saved.signatures['log_prob'](images=tf.constant(ref['x_uint8'][:1]), **h(ref['y'][:1] if K else None))
samples = {n: saved.signatures['sample'](num=tf.constant(n), seed=tf.constant(5), **h(np.arange(n) % max(K, 1)))
           for n in (1, 3)}
errors = {}
for name, call in [
        ('30x30', lambda: saved.signatures['log_prob'](images=tf.zeros((2, 30, 30, 3), tf.uint8), **h([0, 1]))),
        ('gray', lambda: saved.signatures['log_prob'](images=tf.zeros((2, 8, 12, 1), tf.uint8), **h([0, 1]))),
        ('float', lambda: saved.signatures['log_prob'](images=tf.zeros((2, 8, 12, 3)), **h([0, 1]))),
        ('h rows', lambda: saved.signatures['log_prob'](images=tf.zeros((2, 8, 12, 3), tf.uint8), **h([0]))),
        ('num', lambda: saved.signatures['sample'](num=tf.constant(-1), seed=tf.constant(5), **h([]))),
        ('sample h', lambda: saved.signatures['sample'](num=tf.constant(3), seed=tf.constant(5), **h([0])))]:
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


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp('export')
    out = run_script('export.py', '--checkpoint=' + os.path.join(OFFICIAL, 'params.ckpt'),
                     '--image_size=8,12', '--resnet_nonlinearity=relu',
                     '--out=%s' % (d / 'saved'))
    assert out.returncode == 0, out.stderr
    assert 'wrote %s (saved_model, EMA weights' % (d / 'saved') in out.stdout
    consumer = subprocess.run([sys.executable, '-I', '-c', CONSUMER, str(d / 'saved'),
                               os.path.join(OFFICIAL, 'ref.npz')], cwd=str(d), capture_output=True,
                              text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    assert consumer.returncode == 0, consumer.stderr
    return json.loads(consumer.stdout.strip().splitlines()[-1])


@ONE_WORKER
def test_saved_model_log_prob_is_the_official_per_image_loss(exported):
    ref = np.load(os.path.join(OFFICIAL, 'ref.npz'))
    nats = np.array(exported['nats'])
    np.testing.assert_allclose(-nats, ref['loss_each_ema'], rtol=1e-4)
    assert np.all(nats <= 0)
    dims = np.prod(ref['x_uint8'].shape[1:])
    np.testing.assert_allclose(exported['bits_per_dim'], -nats / (np.log(2) * dims), rtol=1e-6)
    np.testing.assert_allclose(exported['one'], nats[:1], rtol=1e-6)  # any batch size


@ONE_WORKER
def test_saved_model_samples_as_the_python_sampler(exported):
    """Any batch size; the same images as pixel_cnn_pp.sample with the same seed (up to float
    round-off: the SavedModel runs the rows in one graph)."""
    model = pixel_cnn_pp.load(os.path.join(OFFICIAL, 'params.ckpt'), image_shape=(8, 12), resnet_nonlinearity='relu')
    assert exported['dtype'] == 'uint8'
    for n in ('1', '3'):
        images = np.array(exported['samples'][n], np.uint8)
        expected = pixel_cnn_pp.sample(model, int(n), h=np.eye(4, dtype=np.float32)[np.arange(int(n)) % 4], seed=5)
        assert images.shape == (int(n), 8, 12, 3)
        assert np.mean(images != expected) <= 1e-3


@ONE_WORKER
def test_saved_model_says_what_its_signatures_take(exported):
    """Wrong shapes: one assertion line saying what the signature takes and what it got
    (not 37 lines of `Incompatible shapes`); a wrong dtype: TensorFlow's one line."""
    errors = exported['errors']
    takes = ('assertion failed: [log_prob takes images: uint8 [N, H, W, 3] with H and W multiples of 4 and '
             'h: float32 [N, 4] (one-hot labels, a row per image);] [got images of shape] ')
    assert takes + '[2 30 30 3] [and h of shape] [2 4]' in errors['30x30']
    assert takes + '[2 8 12 1] [and h of shape] [2 4]' in errors['gray']
    assert takes + '[2 8 12 3] [and h of shape] [1 4]' in errors['h rows']
    assert 'was expected to be a uint8 tensor but is a float tensor' in errors['float']
    sample = ('assertion failed: [sample takes num: int32 >= 0, seed: int32, h: float32 [num, 4] (one-hot '
              'labels, a row per sample);] [got num] ')
    assert sample + '[-1] [and h of shape] [0 4]' in errors['num']
    assert sample + '[3] [and h of shape] [1 4]' in errors['sample h']
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
