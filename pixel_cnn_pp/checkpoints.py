"""Checkpoints and loading: the variables of our checkpoints and of the official TF1 ones (tf.train.Saver), the check that a checkpoint's data files are
complete, and `load`, the one loader of a trained model (save_dir, checkpoint, .keras file,
official checkpoint such as params_cifar.ckpt)."""

import os
import re
import struct
import zipfile

from google.protobuf.message import DecodeError
import keras
import tensorflow as tf
from tensorflow.core.protobuf import tensor_bundle_pb2

from pixel_cnn_pp import config
from pixel_cnn_pp.config import ModelConfig
from pixel_cnn_pp.model import PixelCNNPP
from pixel_cnn_pp.training import EMA, PARAMS

OFFICIAL_EMA_SUFFIX = '/ExponentialMovingAverage'
OVERRIDES = config.field_names(ModelConfig) + ('dtype',)


class IncompleteCheckpoint(Exception):
    """A V2 checkpoint whose index cannot be parsed, or one of whose data files is missing or
    shorter than its index says."""


# What reading a corrupt or truncated checkpoint raises (the reader's IndexError: a short read;
# IncompleteCheckpoint: check_complete's).
READ_ERRORS = (tf.errors.OpError, IndexError, IncompleteCheckpoint)
KINDS = ('a save_dir of train.py, one of its checkpoints (save/ckpt-12), a .keras file, or an '
         'official TF1 checkpoint prefix (params_cifar.ckpt)')


# ---------------------------------------------------------------------- checkpoint variables

def _ours_key(group, name):
    """The key tf.train.Checkpoint gives dict entry `name` of `group` ('/' escaped as '.S')."""
    return '%s/%s/.ATTRIBUTES/VARIABLE_VALUE' % (group, name.replace('.', '..').replace('/', '.S'))


def checkpoint_key(kind, name, use_ema=True):
    """The key of official variable `name` in a checkpoint of this kind ('official': written
    by the official train.py; 'ours': by train.py here), EMA or raw weights."""
    if kind == 'official':
        return 'model/' + name + (OFFICIAL_EMA_SUFFIX if use_ema else '')
    return _ours_key(EMA if use_ema else PARAMS, name)


def checkpoint_kind(reader):
    """'official', 'ours', or None for a checkpoint of something else."""
    keys = reader.get_variable_to_shape_map()
    for kind in ('official', 'ours'):
        if checkpoint_key(kind, 'conv2d_0/V', use_ema=False) in keys:
            return kind
    return None


def checkpoint_variables(reader, kind, use_ema=True):
    """{official variable name: key} of one weight set of a checkpoint: the EMA
    (Polyak-averaged) weights, or the raw ones with use_ema=False."""
    if kind == 'official':
        pattern = 'model/(.*)' + (re.escape(OFFICIAL_EMA_SUFFIX) if use_ema else '')
    else:
        pattern = r'%s/(.*)/\.ATTRIBUTES/VARIABLE_VALUE' % (EMA if use_ema else PARAMS)
    out = {}
    for k in reader.get_variable_to_shape_map():
        match = re.fullmatch(pattern, k)
        if match and (use_ema or not k.endswith(OFFICIAL_EMA_SUFFIX)):
            name = match.group(1)
            out[name.replace('.S', '/').replace('..', '.') if kind == 'ours' else name] = k
    return out


def assign_weights(model, reader, kind, use_ema, path):
    """Assigns every official variable of a built model from a checkpoint of this kind. All
    are checked before any is assigned: a checkpoint of another config raises a ValueError
    naming what is missing, mis-shaped or extra, and changes nothing."""
    shapes = reader.get_variable_to_shape_map()
    names = checkpoint_variables(reader, kind, use_ema)
    wanted = model.official_variables()
    problems = []
    for name, var in wanted.items():
        key = checkpoint_key(kind, name, use_ema)
        if key not in shapes:
            problems.append('missing %s (model expects shape %s)' % (key, tuple(var.shape)))
        elif tuple(shapes[key]) != tuple(var.shape):
            problems.append('%s has shape %s, model expects %s' % (key, tuple(shapes[key]), tuple(var.shape)))
    problems += ['extra %s %s not in this model' % (names[k], tuple(shapes[names[k]]))
                 for k in sorted(names) if k not in wanted]
    if problems:
        raise ValueError(
            'checkpoint %s does not match PixelCNNPP(nr_resnet=%d, nr_filters=%d, '
            'nr_logistic_mix=%d, energy_distance=%s, %s): %d problem(s), first: %s'
            % (path, model.nr_resnet, model.nr_filters, model.nr_logistic_mix,
               model.energy_distance, 'num_labels=%d' % model.num_labels,
               len(problems), '; '.join(problems[:5])))
    values = {name: reader.get_tensor(checkpoint_key(kind, name, use_ema)) for name in wanted}
    for name, var in wanted.items():
        var.assign(values[name])


def _built(config, channels, dtype=None):
    """A built PixelCNNPP of this ModelConfig for images of `channels`, computing in dtype
    (a Keras dtype policy; None: float32)."""
    model = PixelCNNPP(**config.kwargs(), **({'dtype': dtype} if dtype else {}))
    model.build((None, 4, 4, channels), (None, config.num_labels) if config.num_labels else None)
    return model


def load_official_checkpoint(model, path, use_ema=True):
    """Loads a checkpoint of the official code (e.g. params_cifar.ckpt) into `model`, a
    PixelCNNPP of the same config; use_ema=True takes the Polyak-averaged shadows
    (`<name>/ExponentialMovingAverage`), as the official test and sampling do. An unbuilt
    model is built from the checkpoint's shapes. Adam slots (`Variable_N`) are ignored.
    A checkpoint of another config raises a ValueError and changes nothing; an incomplete one
    (check_complete) an IncompleteCheckpoint."""
    check_complete(path)
    reader = tf.train.load_checkpoint(path)
    if checkpoint_kind(reader) != 'official':
        raise ValueError('not an official PixelCNN++ checkpoint: %s has no variable model/conv2d_0/V'
                         % path)
    if not model.built:
        model.build((None, 4, 4, reader.get_variable_to_shape_map()['model/conv2d_0/V'][2] - 1),
                    (None, model.num_labels) if model.num_labels else None)
    assign_weights(model, reader, 'official', use_ema, path)


# ---------------------------------------------------------------------- complete checkpoints

# The index of a V2 checkpoint is a LevelDB-format table (TensorFlow's lib/io/table): its last
# 48 bytes are the handles (offset and size, as varints) of its metaindex and index blocks,
# padding, and this magic number; every block is followed by its compression type and crc.
TABLE_MAGIC = 0xdb4775248b80fb57
FOOTER_SIZE, TRAILER_SIZE = 48, 5


def _varint(data, pos):
    """The varint at data[pos] and the position after it."""
    value = shift = 0
    while data[pos] & 0x80:
        value, pos, shift = value | (data[pos] & 0x7f) << shift, pos + 1, shift + 7
    return value | data[pos] << shift, pos + 1


def _block_handle(data, pos):
    """(offset, size) of the block handle at data[pos], and the position after it."""
    offset, pos = _varint(data, pos)
    size, pos = _varint(data, pos)
    return (offset, size), pos


def _table_block(table, handle):
    """The (key, value) entries of the block of `table` at handle (offset, size): entries whose
    keys share prefixes with the one before, then an array of restart points and its length."""
    offset, size = handle
    if offset + size + TRAILER_SIZE > len(table) - FOOTER_SIZE or size < 4:
        raise ValueError('a block of %d bytes at %d, past the end of the table' % (size, offset))
    if table[offset + size] != 0:
        raise ValueError('a block compressed (type %d), where TensorFlow writes none' % table[offset + size])
    block = table[offset:offset + size]
    end = size - 4 - 4 * struct.unpack_from('<I', block, size - 4)[0]
    entries, key, pos = [], b'', 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + length > end:
            raise ValueError('an entry past the end of the block at %d' % offset)
        key = key[:shared] + block[pos:pos + unshared]
        entries.append((key, block[pos + unshared:pos + unshared + length]))
        pos += unshared + length
    if pos != end:
        raise ValueError('the block at %d has its restart points inside its entries' % offset)
    return entries


def checkpoint_index(prefix):
    """(BundleHeaderProto, {key (bytes): BundleEntryProto}) of V2 checkpoint `prefix`: what its
    .index file says of each tensor (data file, offset, size), read without the data files. A
    tensor stored in slices (cut across data files) has one more entry per slice, under a key
    that begins with a 0 byte. An index that cannot be parsed is an IncompleteCheckpoint."""
    path = prefix + '.index'
    with tf.io.gfile.GFile(path, 'rb') as f:
        table = f.read()
    try:
        if len(table) < FOOTER_SIZE or struct.unpack_from('<Q', table, len(table) - 8)[0] != TABLE_MAGIC:
            raise ValueError('no table footer at its end')
        _, pos = _block_handle(table, len(table) - FOOTER_SIZE)  # the metaindex (empty: no filters)
        index, _ = _block_handle(table, pos)
        entries = dict(entry for _, handle in _table_block(table, index)
                       for entry in _table_block(table, _block_handle(handle, 0)[0]))
        if b'' not in entries:
            raise ValueError('no header entry')
        header = tensor_bundle_pb2.BundleHeaderProto.FromString(entries.pop(b''))
        return header, {key: tensor_bundle_pb2.BundleEntryProto.FromString(value) for key, value in entries.items()}
    except (ValueError, IndexError, struct.error, DecodeError) as e:
        raise IncompleteCheckpoint('%s cannot be parsed (%s)'
                                   % (os.path.basename(path), str(e) or type(e).__name__)) from None


def check_complete(prefix):
    """Raises IncompleteCheckpoint unless every data file of checkpoint `prefix` exists and is
    as long as its index says: TensorFlow checks a tensor's bytes only when it reads that tensor,
    and a load reads one weight set of a training checkpoint. Reads the index alone. A V1
    checkpoint (one file) has nothing to check: its table footer is at its end, and a cut one
    fails to open."""
    if not tf.io.gfile.exists(prefix + '.index'):
        return
    header, entries = checkpoint_index(prefix)
    needs = [0] * header.num_shards
    for key, entry in entries.items():
        if not 0 <= entry.shard_id < header.num_shards:
            raise IncompleteCheckpoint('%s.index puts %s in data file %d of %d' % (
                os.path.basename(prefix), key.decode(errors='replace'), entry.shard_id, header.num_shards))
        needs[entry.shard_id] = max(needs[entry.shard_id], entry.offset + entry.size)
    for shard, need in enumerate(needs):
        path = '%s.data-%05d-of-%05d' % (prefix, shard, header.num_shards)
        if not tf.io.gfile.exists(path):
            raise IncompleteCheckpoint('%s is missing' % os.path.basename(path))
        size = tf.io.gfile.stat(path).length
        if size < need:
            raise IncompleteCheckpoint('{} is {:,} bytes, the index needs {:,}'.format(
                os.path.basename(path), size, need))


# ---------------------------------------------------------------------- load

def run_checkpoints(save_dir):
    """The checkpoints of a folder, newest first: those its state file lists and any other
    ckpt-N it holds (a state file lost or behind its checkpoints). Numbered ones (ckpt-N)
    are ordered by N."""
    state = tf.train.get_checkpoint_state(save_dir)
    listed = [state.model_checkpoint_path] + list(state.all_model_checkpoint_paths)[::-1] if state else []
    listed = [os.path.join(save_dir, os.path.basename(p)) for p in listed]
    found = [p[:-len('.index')] for p in tf.io.gfile.glob(os.path.join(save_dir, 'ckpt-*.index'))]
    prefixes = []
    for p in listed + found:
        if p not in prefixes and (tf.io.gfile.exists(p + '.index') or os.path.isfile(p)):
            prefixes.append(p)
    numbered = [p for p in prefixes if re.search(r'-\d+$', p)]
    return [p for p in prefixes if p not in numbered] + \
        sorted(numbered, key=lambda p: int(p.rsplit('-', 1)[1]), reverse=True)


def newest_readable(save_dir, use):
    """use(prefix) on the newest checkpoint of save_dir it can read: one that is not complete
    (check_complete) or fails with a read error (corrupt, truncated, missing data) is skipped
    with a warning that names it.
    Returns (prefix, what use returned); a ValueError when no checkpoint is readable."""
    prefixes = run_checkpoints(save_dir)
    if not prefixes:
        raise ValueError('%s is a folder with no checkpoint in it (expected %s)' % (save_dir, KINDS))
    for prefix in prefixes:
        try:
            check_complete(prefix)
            return prefix, use(prefix)
        except READ_ERRORS as e:
            print('warning: skipping checkpoint %s, which cannot be read (%s)'
                  % (prefix, str(e).strip().splitlines()[0]))
    raise ValueError('none of the %d checkpoints in %s can be read (%s)'
                     % (len(prefixes), save_dir, ', '.join(os.path.basename(p) for p in prefixes)))


def _checkpoint_prefix(path):
    """The checkpoint prefix of one checkpoint: a V2 prefix (also given as its .index or
    .data file) or a V1 file."""
    prefix = re.sub(r'\.(index|data-\d{5}-of-\d{5})$', '', path)
    if os.path.exists(prefix + '.index'):
        path = prefix
    elif not os.path.isfile(path):  # one file: the V1 format of the released params_cifar.ckpt
        raise ValueError('%s: no such checkpoint (expected %s)' % (path, KINDS))
    return path


def _load_keras(path, use_ema, overrides):
    if not use_ema:
        raise ValueError('%s: a .keras file holds one set of weights (export.py writes the EMA '
                         'ones unless told otherwise); use_ema=False does not apply' % path)
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of an existing file
        raise ValueError('%s: not a readable .keras file (not a zip archive, as .keras files are)'
                         % path)
    try:
        model = keras.models.load_model(path)
    except Exception as e:  # Keras raises many types for a corrupt or foreign archive
        raise ValueError('%s: not a readable .keras file (%s)' % (path, str(e).splitlines()[0] if str(e)
                                                                  else type(e).__name__)) from None
    if not isinstance(model, PixelCNNPP):
        raise ValueError('%s holds a %s, not a PixelCNNPP' % (path, type(model).__name__))
    inferred = dict({k: getattr(model, k) for k in ModelConfig.ARCHITECTURE if k != 'resnet_nonlinearity'},
                    channels=model.channels, num_labels=model.num_labels,
                    nonlinearities=(model.resnet_nonlinearity,))
    wanted = ModelConfig.from_checkpoint(path, inferred, ModelConfig.of_model(model).to_dict(), overrides)
    if wanted == ModelConfig.of_model(model) and 'dtype' not in overrides:
        return model
    rebuilt = _built(wanted, model.channels, overrides.get('dtype'))
    for name, var in rebuilt.official_variables().items():
        var.assign(model.official_variables()[name])
    return rebuilt


def load(path, *, use_ema=True, **overrides):
    """The trained PixelCNNPP at `path`, built and with its weights: a save_dir of train.py
    (its latest checkpoint; the architecture from its config.json), one of its checkpoints
    (save/ckpt-12), a .keras file, or an official TF1 checkpoint prefix (params_cifar.ckpt,
    of any config: nr_resnet, nr_filters, nr_logistic_mix and the number of labels are read
    from the variables' shapes). use_ema=True (the default) gives the Polyak-averaged weights,
    False the raw ones.

    overrides: nr_resnet, nr_filters, nr_logistic_mix, resnet_nonlinearity, energy_distance,
    num_labels, image_shape ((H, W) or (H, W, C)), dropout_p, dtype. They supply what a checkpoint cannot
    say (the resnet nonlinearity of an official checkpoint when it is not concat_elu; the
    image size, by default config.json's or 32x32) and must agree with what it does say: a
    contradiction is a ValueError naming both values. The model takes any batch and image
    size divisible by 4; `model.image_shape` is the training size, `model.num_labels` 0
    for an unconditional model; `model.folder` the save_dir, or the folder of the file, it
    was loaded from (and `model.checkpoint_path`, for a save_dir, which checkpoint)."""
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TypeError('load() got unknown overrides %s; known: %s' % (unknown, ', '.join(OVERRIDES)))
    overrides = {k: v for k, v in overrides.items() if v is not None}
    path = os.fspath(path)
    if path.endswith('.keras'):
        if not os.path.isfile(path):
            raise ValueError('%s: no such .keras file' % path)
        model = _load_keras(path, use_ema, overrides)
        model.folder = os.path.dirname(path)
    elif os.path.isdir(path):  # the newest checkpoint that can be read
        prefix, model = newest_readable(path, lambda prefix: _load_checkpoint(prefix, path, use_ema, overrides))
        model.checkpoint_path = prefix  # which one was read (the scripts say it)
        model.folder = path
    else:
        prefix = _checkpoint_prefix(path)
        try:
            check_complete(prefix)
            model = _load_checkpoint(prefix, os.path.dirname(prefix) or '.', use_ema, overrides)
        except READ_ERRORS as e:
            raise ValueError('%s: not a readable checkpoint (%s)' % (prefix, str(e).strip().splitlines()[0])) from None
        model.folder = os.path.dirname(prefix)
    return model


def _load_checkpoint(prefix, run_dir, use_ema, overrides):
    """load() of one checkpoint; run_dir is the folder that may hold its config.json. A read
    error is one of READ_ERRORS."""
    reader = tf.train.load_checkpoint(prefix)
    kind = checkpoint_kind(reader)
    if kind is None:
        raise ValueError('%s is not a PixelCNN++ checkpoint (no weights conv2d_0/V; expected %s)'
                         % (prefix, KINDS))
    shapes = reader.get_variable_to_shape_map()
    names = checkpoint_variables(reader, kind, use_ema)
    if 'conv2d_0/V' not in names:
        raise ValueError('%s has no %s weights' % (prefix, 'EMA' if use_ema else 'raw'))
    inferred = config.checkpoint_architecture({name: shapes[key] for name, key in names.items()}, prefix)
    saved = config.read(run_dir) if kind == 'ours' else None
    wanted = ModelConfig.from_checkpoint(prefix, inferred, saved, overrides)
    model = _built(wanted, inferred['channels'], overrides.get('dtype'))
    assign_weights(model, reader, kind, use_ema, prefix)
    return model
