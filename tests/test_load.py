"""pixel_cnn_pp.load: every kind of path round-trips, the config of an official checkpoint
is read from its shapes, overrides that contradict the checkpoint are errors, and .keras
files give the same logits bit for bit."""

import glob
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import FIXTURES, SMALL_CKPT, assert_close_to_official, images, initialised, run_in_process
import pixel_cnn_pp
from pixel_cnn_pp.config import ConfigError
from pixel_cnn_pp import PixelCNNPP, checkpoints, config as config_lib
from pixel_cnn_pp.training import Trainer

OFFICIAL_CONFIGS = os.path.join(FIXTURES, 'official_configs')


def weights(model):
    return {name: var.numpy() for name, var in model.official_variables().items()}


def write_tf1_checkpoint(raw, prefix, ema=None):
    """The layout the official train.py writes: model/<name> (raw: {name: array}),
    model/<name>/ExponentialMovingAverage (ema, default raw), and Adam slots the loader must
    ignore."""
    names, tensors = [], []
    for name, value in raw.items():
        names += ['model/' + name, 'model/%s/ExponentialMovingAverage' % name]
        tensors += [value, (ema or raw)[name]]
    names += ['Variable', 'Variable_1']
    tensors += [np.zeros(3, np.float32), np.zeros(3, np.float32)]
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[''] * len(names), tensors=tensors)
    return prefix


@pytest.mark.parametrize('channels, num_labels, kwargs', [
    (3, 0, dict(nr_resnet=2, nr_filters=6, nr_logistic_mix=3)),
    (3, 4, dict(nr_resnet=1, nr_filters=4, nr_logistic_mix=5)),
    (1, 3, dict(nr_resnet=1, nr_filters=6, nr_logistic_mix=3, resnet_nonlinearity='elu')),
])
def test_tf1_checkpoint_of_unseen_config_round_trips(tmp_path, channels, num_labels, kwargs):
    """Configs no fixture has: the config comes from the shapes, the EMA set gives the
    model's logits bit for bit at another batch and image size, use_ema=False every raw
    weight (other values than the EMA ones)."""
    model, h = initialised(channels, num_labels, **kwargs)
    ema = weights(model)
    rng = np.random.default_rng(1)
    raw = {k: (v + rng.normal(0., 0.1, v.shape)).astype(np.float32) for k, v in ema.items()}
    prefix = write_tf1_checkpoint(raw, str(tmp_path / 'params.ckpt'), ema=ema)
    overrides = {'resnet_nonlinearity': 'elu'} if 'resnet_nonlinearity' in kwargs else {}
    loaded = pixel_cnn_pp.load(prefix, **overrides)
    assert (loaded.nr_resnet, loaded.nr_filters, loaded.nr_logistic_mix) == (
        model.nr_resnet, model.nr_filters, model.nr_logistic_mix)
    assert loaded.resnet_nonlinearity == model.resnet_nonlinearity
    assert loaded.num_labels == num_labels and loaded.image_shape == (32, 32, channels)
    x = images((3, 12, 8, channels), seed=1)  # any batch and image size divisible by 4
    h3 = None if h is None else h[:3]
    np.testing.assert_array_equal(loaded(x, h=h3), model(x, h=h3))
    loaded_raw = pixel_cnn_pp.load(prefix + '.index', use_ema=False, **overrides)
    assert dict(loaded_raw.get_config(), name=None) == dict(loaded.get_config(), name=None)
    got = weights(loaded_raw)
    assert got.keys() == raw.keys()
    for name, value in raw.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_nonlinearity_a_checkpoint_cannot_tell_is_asked_for(tmp_path):
    model, _ = initialised(resnet_nonlinearity='relu')
    prefix = write_tf1_checkpoint(weights(model), str(tmp_path / 'params.ckpt'))
    with pytest.raises(ConfigError, match="take 'elu' or 'relu', which its shapes cannot tell apart: pass resnet_nonlinearity"):
        pixel_cnn_pp.load(prefix)
    x = images((2, 8, 8, 3))
    np.testing.assert_array_equal(pixel_cnn_pp.load(prefix, resnet_nonlinearity='relu')(x), model(x))


def write_v1_checkpoint(path):
    """The variables of SMALL_CKPT at path in one file, TF1's V1 checkpoint format (that of the
    released params_cifar.ckpt)."""
    reader = tf.train.load_checkpoint(SMALL_CKPT)
    with tf.Graph().as_default():
        names = sorted(reader.get_variable_to_shape_map())
        variables = {n: tf.compat.v1.get_variable(n, initializer=reader.get_tensor(n)) for n in names}
        saver = tf.compat.v1.train.Saver(variables, write_version=tf.compat.v1.train.SaverDef.V1)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            path = saver.save(session, path, write_meta_graph=False)
    assert os.path.isfile(path) and not os.path.exists(path + '.index')
    return path


def test_v1_single_file_checkpoint(tmp_path):
    """The released params_cifar.ckpt is one file (TF1's V1 checkpoint format)."""
    path = write_v1_checkpoint(str(tmp_path / 'params_cifar.ckpt'))
    ref = np.load(os.path.join(FIXTURES, 'official_small', 'ref.npz'))
    for where in (path, str(tmp_path)):
        assert_close_to_official(pixel_cnn_pp.load(where)(ref['x'][:2]), ref['logits_ema'])


@pytest.mark.parametrize('overrides, message', [
    (dict(nr_filters=16), r'nr_filters=16 was given, but the checkpoint .* has 32$'),
    (dict(nr_resnet=2), r'nr_resnet=2 was given, but the checkpoint .* has 1$'),
    (dict(nr_logistic_mix=10), r'nr_logistic_mix=10 was given, but .* has 5$'),
    (dict(num_labels=10), r'num_labels=10 was given, but the checkpoint .* has no labels'),
    (dict(resnet_nonlinearity='elu'), r"resnet_nonlinearity=elu was given, but .* 'concat_elu'"),
    (dict(image_shape=(8, 8, 1)), r'image_shape=\(8, 8, 1\) was given, but .* 3-channel images'),
])
def test_override_that_contradicts_the_checkpoint(overrides, message):
    """A ConfigError naming the override (cli.py writes it as the flag)."""
    with pytest.raises(ConfigError, match=message) as e:
        pixel_cnn_pp.load(SMALL_CKPT, **overrides)
    assert e.value.fields == tuple(overrides)


def test_overrides_that_agree_and_what_the_checkpoint_cannot_say():
    path = os.path.join(FIXTURES, 'official_small_cond', 'params_cifar.ckpt')
    model = pixel_cnn_pp.load(path, nr_filters=32, num_labels=10, image_shape=(16, 24), dropout_p=0.)
    assert model.image_shape == (16, 24, 3) and model.num_labels == 10 and model.dropout_p == 0.
    with pytest.raises(TypeError, match=r"unknown overrides \['nr_filter'\]"):
        pixel_cnn_pp.load(path, nr_filter=32)


@pytest.mark.parametrize('run', ['official_small', 'official_small_cond'])
def test_official_checkpoint_needs_no_config(run):
    ref = np.load(os.path.join(FIXTURES, run, 'ref.npz'))
    h = tf.one_hot(ref['y'], 10) if 'y' in ref else None
    model = pixel_cnn_pp.load(os.path.join(FIXTURES, run, 'params_cifar.ckpt'))
    assert_close_to_official(model(ref['x'], h=h)[:len(ref['logits_ema'])], ref['logits_ema'])
    raw = pixel_cnn_pp.load(os.path.join(FIXTURES, run, 'params_cifar.ckpt'), use_ema=False)
    assert_close_to_official(raw(ref['x'], h=h)[:len(ref['logits'])], ref['logits'])


def official_config_runs():
    if not os.path.isdir(OFFICIAL_CONFIGS):
        return []
    return sorted(d for d in os.listdir(OFFICIAL_CONFIGS) if os.path.isdir(os.path.join(OFFICIAL_CONFIGS, d)))


@pytest.mark.parametrize('run', official_config_runs())
def test_official_checkpoints_of_other_configs(run):
    """Checkpoints written by the official code at other depths, widths, mixtures,
    nonlinearities, conditioning and image sizes: the config is read from the shapes (the
    nonlinearity where they tell it), and the logits and per-image losses are the official
    ones, with the EMA weights (load) and the raw ones (the same model, reloaded with
    use_ema=False: one build per config; load's use_ema=False is tested above)."""
    ref = np.load(os.path.join(OFFICIAL_CONFIGS, run, 'ref.npz'))
    config = json.loads(str(ref['config']))
    prefix = os.path.join(OFFICIAL_CONFIGS, run, 'params.ckpt')
    overrides = {} if config['resnet_nonlinearity'] == 'concat_elu' else \
        {'resnet_nonlinearity': config['resnet_nonlinearity']}
    model = pixel_cnn_pp.load(prefix, **overrides)
    for key in ('nr_resnet', 'nr_filters', 'nr_logistic_mix', 'resnet_nonlinearity'):
        assert getattr(model, key) == config[key], key
    assert model.num_labels == config['num_labels']
    h = tf.one_hot(ref['y'], config['num_labels']) if config['num_labels'] else None
    assert_close_to_official(model(ref['x'], h=h), ref['logits_ema'])
    nats = pixel_cnn_pp.log_prob(model, ref['x_uint8'], h=h)
    np.testing.assert_allclose(-nats, ref['loss_each_ema'], rtol=1e-4)
    pixel_cnn_pp.load_official_checkpoint(model, prefix, use_ema=False)
    logits = model(ref['x'], h=h)
    assert_close_to_official(logits, ref['logits'])
    np.testing.assert_allclose(pixel_cnn_pp.nn.discretized_mix_logistic_loss(ref['x'], logits, sum_all=False),
                               ref['loss_each'], rtol=1e-4)


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory, one_replica):
    """A save_dir as train.py leaves it: config.json and a checkpoint of a trainer whose raw
    and EMA weights differ."""
    d = str(tmp_path_factory.mktemp('run'))
    trainer = Trainer(PixelCNNPP(nr_resnet=1, nr_filters=6, nr_logistic_mix=2, resnet_nonlinearity='elu',
                                  dropout_p=0., image_shape=(8, 12, 3), num_labels=5), strategy=one_replica)
    trainer.initialize(images((4, 8, 12, 3)), np.arange(4))
    # the raw weights move away from the EMA ones, as training moves them (a train step
    # would cost its tracing and check nothing more here: test_training tests the steps)
    rng = np.random.default_rng(3)
    for var in trainer.params.values():
        var.assign_add(rng.normal(0., 0.05, var.shape).astype(np.float32))
    config_lib.write(d, (trainer.model_config, trainer.train_config))
    path = tf.train.CheckpointManager(trainer.checkpoint, d, max_to_keep=3).save(checkpoint_number=2)
    return d, path, trainer


def test_save_dir_and_checkpoint_round_trip(run_dir):
    d, path, trainer = run_dir
    x, h = images((3, 8, 12, 3), seed=2), tf.one_hot([0, 4, 2], 5)
    for where in (d, path, path + '.index'):
        model = pixel_cnn_pp.load(where)
        assert model.image_shape == (8, 12, 3) and model.num_labels == 5
        assert model.resnet_nonlinearity == 'elu'  # from config.json: the shapes cannot tell
        np.testing.assert_array_equal(model(x, h=h), trainer.ema_model(x, h=h))
    raw = pixel_cnn_pp.load(d, use_ema=False)
    np.testing.assert_array_equal(raw(x, h=h), trainer.model(x, h=h))
    assert not np.array_equal(raw(x, h=h), trainer.ema_model(x, h=h))


def test_checkpoint_without_its_config_json(run_dir, tmp_path):
    """A checkpoint copied without config.json: the shapes give the config, the overrides the rest."""
    _, path, trainer = run_dir
    for suffix in ('.index', '.data-00000-of-00001'):
        tf.io.gfile.copy(path + suffix, str(tmp_path / 'ckpt-2') + suffix)
    with pytest.raises(ValueError, match="'elu' or 'relu'"):
        pixel_cnn_pp.load(str(tmp_path / 'ckpt-2'))
    model = pixel_cnn_pp.load(str(tmp_path / 'ckpt-2'), resnet_nonlinearity='elu')
    assert model.image_shape == (32, 32, 3)
    x, h = images((2, 8, 8, 3)), tf.one_hot([1, 3], 5)
    np.testing.assert_array_equal(model(x, h=h), trainer.ema_model(x, h=h))


def test_config_json_that_contradicts_its_checkpoint(run_dir, tmp_path):
    d, path, _ = run_dir
    for suffix in ('.index', '.data-00000-of-00001'):
        tf.io.gfile.copy(path + suffix, str(tmp_path / 'ckpt-2') + suffix)
    config = json.load(open(os.path.join(d, 'config.json')))
    json.dump(dict(config, nr_filters=7), open(tmp_path / 'config.json', 'w'))
    with pytest.raises(ValueError, match='config.json says nr_filters=7 but the checkpoint has nr_filters=6'):
        pixel_cnn_pp.load(str(tmp_path / 'ckpt-2'))
    (tmp_path / 'config.json').write_text('{"nr_filters": ')
    with pytest.raises(ValueError, match='config.json is not readable JSON'):
        pixel_cnn_pp.load(str(tmp_path / 'ckpt-2'))


def test_keras_file_round_trips_bit_for_bit(run_dir, tmp_path):
    _, path, _ = run_dir
    model = pixel_cnn_pp.load(path)
    model.save(str(tmp_path / 'm.keras'))
    loaded = keras.models.load_model(str(tmp_path / 'm.keras'))  # no custom_objects
    assert isinstance(loaded, PixelCNNPP)
    assert loaded.get_config() == model.get_config()
    assert loaded.image_shape == (8, 12, 3) and loaded.num_labels == 5
    x, h = images((3, 16, 12, 3), seed=3), tf.one_hot([0, 1, 2], 5)
    np.testing.assert_array_equal(loaded(x, h=h), model(x, h=h))
    via_load = pixel_cnn_pp.load(str(tmp_path / 'm.keras'), image_shape=(16, 16))
    assert via_load.image_shape == (16, 16, 3)
    np.testing.assert_array_equal(via_load(x, h=h), model(x, h=h))
    with pytest.raises(ConfigError, match='nr_filters=8 was given, but .*m.keras has 6'):
        pixel_cnn_pp.load(str(tmp_path / 'm.keras'), nr_filters=8)
    with pytest.raises(ValueError, match='holds one set of weights'):
        pixel_cnn_pp.load(str(tmp_path / 'm.keras'), use_ema=False)


def test_layers_serialise():
    """Each layer's config rebuilds the same layer: same official names and shapes."""
    model, _ = initialised(num_labels=2)
    for layer in model._blocks_in_order():
        clone = type(layer).from_config(layer.get_config())
        assert clone.name == layer.name
        if isinstance(layer, pixel_cnn_pp.nn.GatedResnet):
            assert [s.name for s in (clone.conv1, clone.nin_aux, clone.conv2) if s is not None] == \
                [s.name for s in (layer.conv1, layer.nin_aux, layer.conv2) if s is not None]
            assert clone.hw_name == layer.hw_name


@pytest.mark.parametrize('make_path, message', [
    (lambda d: str(d / 'missing'), 'no such checkpoint'),
    (lambda d: str(d), 'a folder with no checkpoint in it'),
    (lambda d: str(d / 'missing.keras'), 'no such .keras file'),
    (lambda d: tf.train.Checkpoint(v=tf.Variable(1.)).write(str(d / 'other')), 'is not a PixelCNN.. checkpoint'),
    (lambda d: ((d / 'm.keras').write_bytes(b'PK\x03\x04cut'), str(d / 'm.keras'))[-1], 'not a readable .keras file'),
])
def test_bad_paths(tmp_path, make_path, message):
    with pytest.raises(ValueError, match=message):
        pixel_cnn_pp.load(make_path(tmp_path))


# ---------------------------------------------------------------------- incomplete checkpoints

def cut(path, size=None):
    """Cuts a file to `size` bytes, by default to half its length."""
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2 if size is None else size)


@pytest.fixture(scope='module')
def two_checkpoints(run_dir, tmp_path_factory):
    """A save_dir holding run_dir's ckpt-2 and a newer ckpt-3 whose EMA weights are other ones."""
    d, path, trainer = run_dir
    two = tmp_path_factory.mktemp('two')
    for name in ('config.json', 'ckpt-2.index', 'ckpt-2.data-00000-of-00001'):
        shutil.copy(os.path.join(d, name), two / name)
    saved = {name: var.numpy() for name, var in trainer.shadows.items()}
    try:
        for var in trainer.shadows.values():
            var.assign_add(tf.ones_like(var))
        trainer.checkpoint.write(str(two / 'ckpt-3'))
    finally:
        for name, var in trainer.shadows.items():
            var.assign(saved[name])
    return two


def sharded_checkpoint(trainer, prefix):
    """trainer's checkpoint written at prefix in several data files (MaxShardSizePolicy); returns
    the prefix and the data files."""
    size = sum(var.numpy().nbytes for var in trainer.params.values())
    policy = tf.train.experimental.MaxShardSizePolicy(size)
    prefix = trainer.checkpoint.write(prefix, options=tf.train.CheckpointOptions(experimental_sharding_callback=policy))
    files = sorted(glob.glob(prefix + '.data-*'))
    assert len(files) > 2
    return prefix, files


def test_a_checkpoint_cut_short_is_skipped(run_dir, two_checkpoints, tmp_path, capsys):
    """The newest checkpoint's data file cut in half, where the weights a load reads lie in the
    intact half (TensorFlow would read them without a word): load(save_dir) and resuming
    (newest_readable, whatever it reads) take the one before, with the warning naming it; the
    cut one given itself is a ValueError naming it."""
    _, _, trainer = run_dir
    d = shutil.copytree(two_checkpoints, tmp_path / 'save')
    size = os.path.getsize(d / 'ckpt-3.data-00000-of-00001')
    cut(d / 'ckpt-3.data-00000-of-00001')
    reason = 'ckpt-3.data-00000-of-00001 is {:,} bytes, the index needs {:,}'.format(size // 2, size)
    warning = 'warning: skipping checkpoint %s, which cannot be read (%s)\n' % (d / 'ckpt-3', reason)
    for use_ema in (False, True):
        model = pixel_cnn_pp.load(str(d), use_ema=use_ema)
        assert capsys.readouterr().out == warning
        assert model.checkpoint_path == str(d / 'ckpt-2')
    got, expected = weights(model), weights(trainer.ema_model)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert checkpoints.newest_readable(str(d), lambda prefix: None) == (str(d / 'ckpt-2'), None)
    assert capsys.readouterr().out == warning
    with pytest.raises(ValueError) as e:
        pixel_cnn_pp.load(str(d / 'ckpt-3'))
    assert str(e.value) == '%s: not a readable checkpoint (%s)' % (d / 'ckpt-3', reason)


def test_a_missing_data_file(run_dir, two_checkpoints, tmp_path, capsys):
    """One data file of several gone: the checkpoint is not read, and the message names the file."""
    _, _, trainer = run_dir
    d = shutil.copytree(two_checkpoints, tmp_path / 'save')
    prefix, files = sharded_checkpoint(trainer, str(d / 'ckpt-4'))
    os.remove(files[1])
    reason = '%s is missing' % os.path.basename(files[1])
    with pytest.raises(ValueError) as e:
        pixel_cnn_pp.load(prefix)
    assert str(e.value) == '%s: not a readable checkpoint (%s)' % (prefix, reason)
    assert pixel_cnn_pp.load(str(d)).checkpoint_path == str(d / 'ckpt-3')
    assert capsys.readouterr().out == 'warning: skipping checkpoint %s, which cannot be read (%s)\n' % (prefix, reason)


def compress_first_block(index):
    """Marks the index block of a checkpoint's index as Snappy-compressed."""
    table = bytearray(open(index, 'rb').read())
    _, pos = checkpoints._block_handle(table, len(table) - checkpoints.FOOTER_SIZE)
    (offset, size), _ = checkpoints._block_handle(table, pos)
    table[offset + size] = 1
    open(index, 'wb').write(bytes(table))


@pytest.mark.parametrize('damage, reason', [
    (lambda index: cut(index, os.path.getsize(index) - 1),
     'ckpt-3.index cannot be parsed (no table footer at its end)'),
    (compress_first_block, 'ckpt-3.index cannot be parsed (a block compressed (type 1), where TensorFlow '
                           'writes none)'),
])
def test_an_index_that_cannot_be_parsed(two_checkpoints, tmp_path, capsys, damage, reason):
    d = shutil.copytree(two_checkpoints, tmp_path / 'save')
    damage(d / 'ckpt-3.index')
    assert pixel_cnn_pp.load(str(d)).checkpoint_path == str(d / 'ckpt-2')
    assert capsys.readouterr().out == 'warning: skipping checkpoint %s, which cannot be read (%s)\n' % (
        d / 'ckpt-3', reason)


def test_checkpoint_index_agrees_with_tensorflow(run_dir, tmp_path):
    """checkpoint_index against TensorFlow's reader, on the official fixture (an index of several
    blocks), our training checkpoint and the same in several data files (where the tensors cut
    across two files are stored as slices, whose keys begin with a 0 byte): the same keys, dtypes
    and shapes, and every tensor's bytes where it says (data file, offset, size); each data file
    ends where its last tensor does, so check_complete refuses it one byte shorter."""
    _, path, trainer = run_dir
    for prefix in (SMALL_CKPT, path, sharded_checkpoint(trainer, str(tmp_path / 'sharded'))[0]):
        header, entries = checkpoints.checkpoint_index(prefix)
        reader = tf.train.load_checkpoint(prefix)
        shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
        tensors = {key.decode(): entry for key, entry in entries.items() if not key.startswith(b'\0')}
        assert tensors.keys() == shapes.keys()
        files = ['%s.data-%05d-of-%05d' % (prefix, i, header.num_shards) for i in range(header.num_shards)]
        assert sorted(glob.glob(prefix + '.data-*')) == files
        data = [open(f, 'rb').read() for f in files]
        for key, entry in tensors.items():
            assert [dim.size for dim in entry.shape.dim] == shapes[key], key
            assert entry.dtype == dtypes[key].as_datatype_enum, key
            stored = data[entry.shard_id][entry.offset:entry.offset + entry.size]
            value = reader.get_tensor(key)
            if entry.slices:
                assert sum(e.size for k, e in entries.items() if k.startswith(b'\0%s\0' % key.encode())) == value.nbytes
            elif dtypes[key] == tf.string:  # their lengths, a checksum, then their bytes
                assert stored.endswith(b''.join(np.asarray(value, object).ravel())), key
            else:
                assert stored == value.tobytes(), key
        ends = [max(e.offset + e.size for e in entries.values() if e.shard_id == i) for i in range(header.num_shards)]
        assert ends == [len(stored) for stored in data]
        checkpoints.check_complete(prefix)
    cut(files[-1], len(data[-1]) - 1)
    with pytest.raises(checkpoints.IncompleteCheckpoint) as e:
        checkpoints.check_complete(prefix)
    assert str(e.value) == '{} is {:,} bytes, the index needs {:,}'.format(
        os.path.basename(files[-1]), len(data[-1]) - 1, len(data[-1]))


def test_a_cut_v1_checkpoint(tmp_path):
    """A V1 checkpoint has its table's footer at the end of its one file: cut, it cannot be
    opened, and load says so in one line (no traceback, nothing chained)."""
    path = write_v1_checkpoint(str(tmp_path / 'params_cifar.ckpt'))
    cut(path)
    with pytest.raises(ValueError) as e:
        pixel_cnn_pp.load(path)
    assert str(e.value).startswith('%s: not a readable checkpoint (' % path) and '\n' not in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_sample_py_on_a_save_dir_without_model_flags(run_dir, tmp_path):
    """Everything comes from the run's config.json: size 8x12, 5 labels, elu. The naive
    sampler (the same images as the fast one, test_sampling checks) saves tracing the fast
    one twice; sample.py's default method is run by test_sampling's sample.py tests."""
    d, _, _ = run_dir
    run_in_process('sample.py', '--checkpoint=' + d, '--num_samples=3', '--labels=4,1', '--seed=2', '--method=naive',
                   '--out=%s' % (tmp_path / 's'), status=0)
    images = np.load(tmp_path / 's.npz')['samples']
    expected = pixel_cnn_pp.sample(pixel_cnn_pp.load(d), 3, h=tf.one_hot([4, 1, 4], 5), seed=2, method='naive')
    assert images.shape == (3, 8, 12, 3)
    np.testing.assert_array_equal(images, expected)
