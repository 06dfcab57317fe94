"""Settings every test runs under, and the helpers test files share (import them with
`from conftest import ...`: pytest puts tests/ on sys.path)."""

import contextlib
import gc
import io
import os
import pickle
import runpy
import subprocess
import tarfile
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # as the scripts do, before TensorFlow
import pixel_cnn_pp  # noqa: F401  (before TensorFlow: its import without the start-up lines)
from absl import app, flags
import keras
import numpy as np
import pytest
import tensorflow as tf

from pixel_cnn_pp import cli  # (its common flags belong to every script)

# Grappler's graph rewrites cost seconds per traced step and buy nothing on tests' tiny models.
tf.config.optimizer.set_experimental_options({'disable_meta_optimizer': True})

# Tracing a model makes millions of Python objects, and the cyclic collector's passes over them
# cost 3 to 6% of the suite (345 s -> 333 s in all): the objects alive now (TensorFlow's
# modules) are never scanned again, and full passes come 10 times less often.
gc.freeze()
gc.set_threshold(50000, 50, 100)

# Two logical CPU devices, so tests can run MirroredStrategy with two replicas.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices('CPU')[0], [tf.config.LogicalDeviceConfiguration()] * 2)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')  # files of the official code (fixtures/README.md)
SMALL_CKPT = os.path.join(FIXTURES, 'official_small', 'params_cifar.ckpt')
SMALL = dict(nr_resnet=1, nr_filters=8, nr_logistic_mix=2)  # the tests' usual tiny model


def project_files(suffix=''):
    """The project's files ending in `suffix`, relative to ROOT: those git tracks (a build/,
    a dist/, a virtual environment or any other untracked or ignored file in the tree is not
    the project's). Outside a git checkout (an unpacked source archive): every file but those
    of hidden folders, build/, dist/, *.egg-info and virtual environments."""
    try:
        listed = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, check=True).stdout
        names = [n for n in listed.decode().split('\0') if n]
    except (OSError, subprocess.CalledProcessError):
        names = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if not (d.startswith('.') or d in ('build', 'dist') or d.endswith('.egg-info')
                                               or os.path.exists(os.path.join(folder, d, 'pyvenv.cfg')))]
            names += [os.path.relpath(os.path.join(folder, f), ROOT) for f in files]
    return sorted(n for n in names if n.endswith(suffix) and os.path.isfile(os.path.join(ROOT, n)))


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same random weights and dropout masks."""
    keras.utils.set_random_seed(1234)


@pytest.fixture(scope='session')
def two_replicas():
    """One strategy per process, as in a real run: MirroredStrategy objects over the same
    devices would share collective keys."""
    return tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])


@pytest.fixture(scope='session')
def one_replica():
    return tf.distribute.OneDeviceStrategy('/cpu:0')


# ---------------------------------------------------------------------- data and models

def uint8_images(shape, seed=0):
    """Uniformly random 8-bit images of this shape."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def images(shape, seed=0):
    """Random 8-bit images scaled to [-1, 1], as the model sees them."""
    return ((uint8_images(shape, seed).astype(np.float32) - 127.5) / 127.5).astype(np.float32)


def initialised(channels=3, num_labels=0, size=(8, 8), batch=4, seed=0, **config):
    """A PixelCNNPP (SMALL unless config says otherwise) after its data-dependent init on
    `batch` random images of `size`; returns (model, h), h the one-hot labels 0, 1, 2, ...
    (mod num_labels) of that batch, or None for an unconditional model (num_labels 0)."""
    from pixel_cnn_pp import PixelCNNPP
    model = PixelCNNPP(**dict(SMALL, **config), num_labels=num_labels)
    h = tf.one_hot(np.arange(batch) % num_labels, num_labels) if num_labels else None
    model(images((batch,) + tuple(size) + (channels,), seed), h=h, init=True)
    return model, h


def assert_close_to_official(ours, official):
    """What docs/official.md claims: float32 round-off, max |ours - official| <= 2e-6
    max |official| (measured at most 6.9e-7 on every fixture run, raw and EMA weights)."""
    ours, official = np.asarray(ours), np.asarray(official)
    assert ours.shape == official.shape
    assert np.abs(ours - official).max() <= 2e-6 * np.abs(official).max()


def write_cifar_layout(root, per_file=7, seed=0, protocol=pickle.HIGHEST_PROTOCOL):
    """CIFAR-10 python batches in the official download's layout under root
    (cifar-10-python/cifar-10-batches-py): N x 3072 uint8, the R plane then G then B,
    row-major, of random images. Returns {file name: (images, labels)}."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, 'cifar-10-python', 'cifar-10-batches-py')
    os.makedirs(folder)
    written = {}
    for name in ['data_batch_%d' % i for i in range(1, 6)] + ['test_batch']:
        x = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, per_file).tolist()
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump({'batch_label': 'batch %s' % name, 'labels': y,
                         'data': x.transpose(0, 3, 1, 2).reshape(per_file, 3072)}, f, protocol=protocol)
        written[name] = (x, y)
    return written


# ---------------------------------------------------------------------- scripts

def script_env(**changes):
    """The environment a script runs in: this one, the repository on PYTHONPATH, TensorFlow's
    C++ logging at warnings, no TF_CONFIG (a cluster spec would make train.py wait for
    workers); changes set a variable, or remove it where the value is None."""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2')
    env.pop('TF_CONFIG', None)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


# No network, at once, whatever the machine's: every proxy variable points at port 9 of this
# machine, which refuses connections (urllib and tensorflow-datasets' requests both use them).
def write_original(root, n_train=24, n_test=8, form='tar', seed=0):
    """The original layout: one PNG per image, train_32x32/ and valid_32x32/ as uncompressed
    tar archives (stored in shuffled order) or as folders. Returns the (train, test) images
    in sorted file-name order."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    expected = []
    for split, n in (('train_32x32', n_train), ('valid_32x32', n_test)):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        names = ['%s/%07d.png' % (split, i) for i in rng.permutation(10 ** 6)[:n]]
        if form == 'tar':
            with tarfile.open(os.path.join(root, split + '.tar'), 'w') as tar:
                for name, image in zip(names, x):
                    png = tf.io.encode_png(image).numpy()
                    info = tarfile.TarInfo(name)
                    info.size = len(png)
                    tar.addfile(info, io.BytesIO(png))
        else:
            os.makedirs(os.path.join(root, split))
            for name, image in zip(names, x):
                tf.io.write_file(os.path.join(root, name), tf.io.encode_png(image))
        expected.append(x[np.argsort(names)])
    return tuple(expected)


def write_imagenet32(root, train_sizes=(10, 12), n_test=7, form='npz', train_dir='', test_dir='', seed=0):
    """Imagenet32 batches train_data_batch_1.. and val_data: data uint8 (N, 3072), the R, G, B
    planes of 32x32 images; labels 1..1000 (1 and 1000 included); train batches with a mean.
    As .npz files or as pickles without extension. Returns (train_x, train_y, test_x, test_y)
    as load should give them: NHWC images and 0-based labels."""
    rng = np.random.default_rng(seed)
    out = []
    for name, n in [('train_data_batch_%d' % (i + 1), n) for i, n in enumerate(train_sizes)] + [('val_data', n_test)]:
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        y = np.concatenate([[1, 1000], rng.integers(1, 1001, n - 2)])
        d = {'data': x.transpose(0, 3, 1, 2).reshape(n, 3072), 'labels': y.tolist()}
        if name != 'val_data':
            d['mean'] = d['data'].mean(0)
        folder = os.path.join(root, test_dir if name == 'val_data' else train_dir)
        os.makedirs(folder, exist_ok=True)
        if form == 'npz':
            np.savez(os.path.join(folder, name + '.npz'), **d)
        else:
            with open(os.path.join(folder, name), 'wb') as f:
                pickle.dump(d, f, protocol=2)
        out.append((x, (y - 1).astype(np.int32)))
    train, test = out[:-1], out[-1]
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])) + test


OFFLINE = dict({k: 'http://127.0.0.1:9' for k in ('https_proxy', 'http_proxy', 'HTTPS_PROXY', 'HTTP_PROXY')},
               no_proxy='', NO_PROXY='')


def run_script(name, *args, status=None, env=None, timeout=600):
    """Runs the repository's script `name` (e.g. 'sample.py') in a fresh process with these
    arguments; returns the CompletedProcess (text stdout and stderr). status: the exit status
    it must end with (its stderr is the assertion's message), or None to leave it unchecked.
    env: changes to script_env."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, name)] + list(args), env=script_env(**(env or {})),
                         capture_output=True, text=True, timeout=timeout)
    if status is not None:
        assert out.returncode == status, out.stderr
    return out


# absl's own flags (its help flags too, which app.run defines at its first call) and the
# common ones of cli.py: the flags every script's process starts with
app.define_help_flags()
BASE_FLAGS = frozenset(flags.FLAGS)
_REGISTRY = ('__flags', '__hiddenflags', '__flags_by_module', '__flags_by_module_id', '__key_flags_by_module',
             '__flags_parsed')


def run_in_process(name, *args, status=None):
    """Runs the repository's script `name` (e.g. 'export.py') in this process as its own
    process would run with these arguments, without the seconds a process spends importing
    TensorFlow: returns (exit status, stdout, stderr). status: the exit status it must end
    with (its stderr is the assertion's message). What only a real process shows (the console
    of TensorFlow's start-up, signals) is tested with run_script.

    absl keeps one set of flags per process, and scripts define some of the same names their
    own way (--batch_size, --checkpoint, the model flags): during the call the script's flags
    are the only ones besides BASE_FLAGS; the others, and every flag's value, come back after."""
    FLAGS = flags.FLAGS
    registry = {k: {key: list(v) if isinstance(v, list) else v for key, v in FLAGS.__dict__[k].items()}
                if isinstance(FLAGS.__dict__[k], dict) else FLAGS.__dict__[k] for k in _REGISTRY}
    values = {flag: dict(flag.__dict__) for flag in FLAGS._flags().values()}
    argv, out, err, code = sys.argv, io.StringIO(), io.StringIO(), 0
    try:
        for flag_name in [n for n in FLAGS if n not in BASE_FLAGS]:
            delattr(FLAGS, flag_name)
        for flag_name in BASE_FLAGS:
            FLAGS[flag_name].unparse()
        main = runpy.run_path(os.path.join(ROOT, name), run_name='script_' + name[:-3])['main']
        sys.argv = [name] + list(args)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.run(main)
    except SystemExit as e:
        code = e.code or 0
    finally:
        sys.argv = argv
        FLAGS.__dict__.update(registry)
        for flag, state in values.items():
            flag.__dict__.update(state)
    if status is not None:
        assert code == status, err.getvalue()
    return code, out.getvalue(), err.getvalue()


def free_ports(n):
    """n TCP ports of localhost free now, for a local cluster of n workers (TF_CONFIG)."""
    import socket
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(('localhost', 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def pytest_configure(config):
    """Under --dist loadgroup (pyproject.toml) pytest-xdist sends one xdist_group's tests to one
    worker by writing '@group' into each item's _nodeid; pytest 9.2 no longer reads _nodeid
    (pytest-xdist#1386), and each heavy module fixture would silently be built once per worker."""
    if (getattr(config.option, 'dist', None) == 'loadgroup' and getattr(config.option, 'numprocesses', None)
            and not hasattr(config, 'workerinput')):
        import _pytest.nodes

        class Probe:
            nodeid = _pytest.nodes.Node.nodeid
        probe = Probe()
        probe._id, probe._nodeid = 'test_x', 'test_x@group'  # the one attribute this pytest reads
        if probe.nodeid != 'test_x@group':
            raise pytest.UsageError('pytest %s ignores xdist_group under --dist loadgroup (pytest-xdist#1386): '
                                    'install the pytest of requirements.txt' % pytest.__version__)


# ---------------------------------------------------------------------- image folders

def encode_image(image, kind='png'):
    """The bytes of a uint8 (H, W, C) image as a file of `kind`: png, jpeg (TensorFlow's
    encoders), bmp or gif (Pillow's; gif: RGB through its palette, exact for images of at
    most 256 colours)."""
    if kind == 'png':
        return tf.io.encode_png(image).numpy()
    if kind == 'jpeg':
        return tf.io.encode_jpeg(image).numpy()
    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(out, kind.upper())
    return out.getvalue()


def write_image_folder(root, classes=None, n=4, shape=(28, 28, 1), seed=0, splits=('train', 'test'),
                       kind='png'):
    """A folder of random images as train.py reads one: root/SPLIT/CLASS/NNN.png for each of
    `splits` (() : the images straight in root) and `classes` (None: flat), n images each (a
    dict {split: n} for other numbers). Returns {split (or None): (images, labels or None)}
    in the order a reader takes them: classes sorted, then files."""
    rng = np.random.default_rng(seed)
    written = {}
    for split in splits or (None,):
        count = n[split] if isinstance(n, dict) else n
        xs, ys = [], []
        for label, name in enumerate(sorted(classes) if classes else [None]):
            folder = os.path.join(*[p for p in (root, split, name) if p])
            os.makedirs(folder, exist_ok=True)
            for k in range(count):
                x = rng.integers(0, 256, shape, dtype=np.uint8)
                with open(os.path.join(folder, '%03d.%s' % (k, kind)), 'wb') as f:
                    f.write(encode_image(x, kind))
                xs.append(x)
                ys.append(label)
        written[split] = (np.stack(xs), np.array(ys, np.int32) if classes else None)
    return written


def write_tfds_set(data_dir, name='mnist', sizes=(('train', 40), ('test', 8)), seed=0):
    """A tensorflow-datasets set prepared in data_dir as a download would leave it (its
    registered features and version, random images and labels), so tfds.load(name,
    data_dir=data_dir) reads it offline. Returns {split: (images, labels)}."""
    import tensorflow_datasets as tfds
    real = tfds.builder(name)
    image, label = real.info.features['image'], real.info.features['label']
    rng = np.random.default_rng(seed)
    written = {split: (rng.integers(0, 256, (n,) + image.shape, dtype=np.uint8),
                       rng.integers(0, label.num_classes, n)) for split, n in sizes}
    builder = tfds.dataset_builders.TfDataBuilder(
        name=name, version=str(real.version), features=real.info.features, data_dir=data_dir,
        split_datasets={split: tf.data.Dataset.from_tensor_slices({'image': x, 'label': y})
                        for split, (x, y) in written.items()})
    from pixel_cnn_pp import tfds_sets
    with tfds_sets.quiet():
        builder.download_and_prepare()
    return written
