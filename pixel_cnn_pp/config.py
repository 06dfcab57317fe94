"""What a model and a training run are, validated once: `ModelConfig` (PixelCNNPP's
architecture, dropout, the image shape, the number of labels: everything its constructor
takes) and `TrainConfig` (the settings of the official train.py's loop), both recorded in a
run's config.json, and the rule of what a resumed run may change (`resume`).

Errors are `ConfigError`s that name the fields (Python argument names, never command-line
flags; cli.py translates them)."""

import dataclasses
import json
import os
import re
from typing import Optional, Tuple

from pixel_cnn_pp import files

CONFIG_FILE = 'config.json'
NONLINEARITIES = ('concat_elu', 'elu', 'relu')
PRECISIONS = ('float32', 'mixed_bfloat16', 'mixed_float16')
DATA_SETS = ('cifar', 'imagenet', 'npz', 'folder')  # and tfds:NAME[:SPLIT], any tensorflow-datasets set
TFDS = 'tfds:'
HELD_OUT = 0.1  # the share of a set without a test split held out as its test set
CHANNELS = (1, 3)  # grayscale, RGB
MULTIPLE = 4       # of H and W: the network halves them twice
MIXTURE_PARAMS = {1: 3, 3: 10}  # outputs per logistic of the mixture, by channels (nn.num_mixture_params)


class Settings:
    """An error whose message names settings: one sentence in which they stand as {field}
    (written field=value), {field:name} (the name alone) or {field=_key} (field with another
    value, values['_key']); `values` gives each one's value, the first keyword the field at
    fault; a message without placeholders names its fields as positional arguments.
    `fields` are their names. str(e) writes them as Python arguments (batch_size=16),
    cli.py as the flags that set them (--batch_size=16), from one table: no sentence is
    rewritten."""

    PLACEHOLDER = re.compile(r'\{(\w+)(?:(:name)|=(_\w+))?\}')

    def __init__(self, message, *fields, **values):
        self.template, self.values = message, values
        self.fields = tuple(k for k in values if not k.startswith('_')) + fields
        super().__init__(self.render(as_argument))

    @property
    def field(self):
        """The setting at fault."""
        return self.fields[0] if self.fields else None

    def render(self, write):
        """The message with each setting written by write(field, value, name_only) (value:
        NO_VALUE where none was given)."""
        def setting(m):
            field = m.group(1)
            if field not in self.fields:  # not a placeholder: text of the message (a path's braces)
                return m.group(0)
            return write(field, self.values.get(m.group(3) or field, NO_VALUE), bool(m.group(2)))
        return self.PLACEHOLDER.sub(setting, self.template)


class ConfigError(Settings, ValueError):
    """A setting that cannot be, or cannot be combined (see Settings for its message)."""


NO_VALUE = object()


def as_argument(field, value, name_only=False):
    """A setting as Python writes it: `batch_size=16`, `resume=True`, or the name alone."""
    return field if name_only or value is NO_VALUE else '%s=%s' % (field, value)


def fits(shape, channels=CHANNELS):
    """The one shape rule of PixelCNN++: whether an image shape (H, W, C), or (H, W), has H
    and W positive multiples of 4 (two stride-2 downsamplings) and C in `channels` (1 or 3;
    a built model: its own). A dimension None (not known yet) fits."""
    sizes_fit = all(d is None or (d >= 1 and d % MULTIPLE == 0) for d in shape[:2])
    return sizes_fit and (len(shape) < 3 or shape[2] in channels)


def refuse(field, problem):
    """A ConfigError saying `problem` of the argument `field`, named as a placeholder where
    it is one (an identifier), else written as it is (a set's description)."""
    if field.isidentifier():
        raise ConfigError('{%s:name} %s' % (field, problem), field)
    raise ConfigError('%s %s' % (field, problem))


def check_image_shape(shape, field='image_shape'):
    """The shape rule (`fits`) of an image shape (H, W, C) named `field`. Returns the shape
    as a tuple of ints."""
    try:
        shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        refuse(field, 'must be (H, W, C), got %r' % (shape,))
    if len(shape) != 3 or not fits(shape):
        refuse(field, 'must be (H, W, C) with H and W positive multiples of 4 and C = 1 or 3, got %r' % (shape,))
    return shape


def check_channels(channels, field, shape=None):
    """The shape rule's C: 1 (grayscale) or 3 (RGB), of `field` (of that shape)."""
    if channels not in CHANNELS:
        refuse(field, 'must have 1 (grayscale) or 3 (RGB) channels, got %s'
               % ('shape %s' % (tuple(shape),) if shape is not None else channels))


def check_images(shape, field='images', channels=CHANNELS):
    """The shape rule of a batch of images (N, H, W, C) named `field`; `channels`: the C
    allowed (a built model's own). Returns the shape as a tuple."""
    shape = tuple(shape)
    if len(shape) != 4:
        refuse(field, 'must be a 4-D batch of images (N, H, W, C), got shape %s' % (shape,))
    if shape[3] not in channels:
        if channels == CHANNELS:
            check_channels(shape[3], field, shape)
        refuse(field, "must have %s channels (the model's), got shape %s" % (' or '.join(map(str, channels)), shape))
    if not fits(shape[1:]):
        refuse(field, 'must have a height and width that are positive multiples of 4 (two stride-2 '
               'downsamplings), got shape %s' % (shape,))
    return shape


def is_tfds(data_set):
    """Whether a data set (or a SPEC) names a tensorflow-datasets set: tfds:NAME[:SPLIT]."""
    return isinstance(data_set, str) and data_set.startswith(TFDS)


def check_data_set(data_set):
    """The rule of data_set: one of DATA_SETS, or tfds:NAME[:SPLIT] (a split may hold colons:
    train[:10%])."""
    if is_tfds(data_set):
        parts = data_set.split(':', 2)
        if all(parts[1:]):
            return
        raise ConfigError('{data_set} is not tfds:NAME[:SPLIT] (e.g. tfds:mnist, tfds:svhn_cropped:train)',
                          data_set=data_set)
    if data_set not in DATA_SETS:
        raise ConfigError('{data_set} is not one of %s, or tfds:NAME[:SPLIT]' % ', '.join(DATA_SETS),
                          data_set=data_set)


def check_image_size(image_size):
    """The rule of image_size (what images are resized and centre-cropped to): None, or
    (H, W) positive multiples of 4 (one number: square). Returns it as a tuple of ints."""
    if image_size is None:
        return None
    size = image_size if isinstance(image_size, (list, tuple)) else [image_size]
    try:
        size = tuple(int(s) for s in size if not isinstance(s, bool) and int(s) == float(s))
    except (TypeError, ValueError):
        size = ()
    size = size * 2 if len(size) == 1 else size
    if len(size) != 2 or not fits(size):
        raise ConfigError('{image_size} is not H,W (or one number) with H and W positive multiples of 4',
                          image_size=image_size)
    return size


def _positive_int(obj, *names):
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError('{%s} is not a positive integer' % name, **{name: value})


def _in_range(obj, name, low, high, low_open=False, high_open=False):
    value = getattr(obj, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value or \
            value < low or value > high or (low_open and value == low) or (high_open and value == high):
        raise ConfigError('{%s} is not in %s%g, %g%s' % (
            name, '(' if low_open else '[', low, high, ')' if high_open else ']'), **{name: value})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A PixelCNNPP: its architecture (the official model flags), the image shape it is
    trained on, its number of labels (0: unconditional) and its dropout (the official
    --dropout_p, which only training applies). PixelCNNPP(**config.kwargs()) builds it."""
    nr_resnet: int = 5
    nr_filters: int = 160
    nr_logistic_mix: int = 10
    resnet_nonlinearity: str = 'concat_elu'
    energy_distance: bool = False
    image_shape: Tuple[int, int, int] = (32, 32, 3)
    num_labels: int = 0
    dropout_p: float = 0.5

    def __post_init__(self):
        _positive_int(self, 'nr_resnet', 'nr_filters', 'nr_logistic_mix')
        if self.resnet_nonlinearity not in NONLINEARITIES:
            raise ConfigError('{resnet_nonlinearity} is not one of %s' % ', '.join(NONLINEARITIES),
                              resnet_nonlinearity=self.resnet_nonlinearity)
        object.__setattr__(self, 'energy_distance', bool(self.energy_distance))
        object.__setattr__(self, 'image_shape', check_image_shape(self.image_shape))
        if isinstance(self.num_labels, bool) or not isinstance(self.num_labels, int) or self.num_labels < 0:
            raise ConfigError('{num_labels} is not an integer >= 0', num_labels=self.num_labels)
        _in_range(self, 'dropout_p', 0., 1., high_open=True)

    # the fields a checkpoint's variables say (and the official model flags)
    ARCHITECTURE = ('nr_resnet', 'nr_filters', 'nr_logistic_mix', 'resnet_nonlinearity', 'energy_distance')

    def kwargs(self):
        """PixelCNNPP's arguments."""
        return dict(dataclasses.asdict(self), image_shape=tuple(self.image_shape))

    def to_dict(self):
        return dict(dataclasses.asdict(self), image_shape=list(self.image_shape))

    @classmethod
    def from_dict(cls, d):
        """From config.json (other keys ignored; a missing one takes its default)."""
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    @classmethod
    def of_model(cls, model):
        """The config of a built PixelCNNPP."""
        return cls(**{f.name: getattr(model, f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def from_checkpoint(cls, path, inferred, saved, overrides):
        """The config of the model a checkpoint at `path` holds: from what its shapes imply
        (`inferred`, checkpoint_architecture's), its run's config.json (`saved`, or None) and
        the caller's overrides (pixel_cnn_pp.load's); an override the checkpoint contradicts
        is a ConfigError naming both values (config.json contradicting it, a ValueError).
        dropout_p: the override, else config.json's, else the default."""
        saved, given = dict(saved or {}), dict(overrides)
        kwargs = {}
        for key in ('nr_resnet', 'nr_filters', 'nr_logistic_mix', 'energy_distance', 'num_labels'):
            found = inferred.get(key, saved.get(key))  # energy distance: no nr_logistic_mix in the shapes
            if key in inferred and key in saved and saved[key] != found:
                raise ValueError('%s: its config.json says %s=%r but the checkpoint has %s=%r'
                                 % (path, key, saved[key], key, found))
            if key in given and key in inferred and given[key] != found:
                raise ConfigError('{%s} was given, but the checkpoint %s has %s'
                                  % (key, path, 'no labels (unconditional)' if key == 'num_labels' and not found
                                     else '%r' % (found,)), **{key: given[key]})
            kwargs[key] = given.get(key, found)
        allowed = inferred['nonlinearities']
        nonlinearity = given.get('resnet_nonlinearity', saved.get('resnet_nonlinearity'))
        if nonlinearity is None and len(allowed) > 1:
            raise ConfigError("%s: the checkpoint's resnet blocks take %s, which its shapes cannot tell "
                              'apart: pass {resnet_nonlinearity:name}' % (path, ' or '.join(map(repr, allowed))),
                              'resnet_nonlinearity')
        if nonlinearity is not None and nonlinearity not in allowed:
            raise ConfigError('{resnet_nonlinearity} was given, but the checkpoint %s has resnet blocks of %s'
                              % (path, ' or '.join(map(repr, allowed))), resnet_nonlinearity=nonlinearity)
        kwargs['resnet_nonlinearity'] = nonlinearity or allowed[0]
        channels = inferred['channels']
        image_shape = tuple(given.get('image_shape') or saved.get('image_shape') or (32, 32))
        if len(image_shape) == 2:
            image_shape += (channels,)
        elif image_shape[2] != channels:
            raise ConfigError('{image_shape} was given, but the checkpoint %s is of %d-channel images'
                              % (path, channels), image_shape=image_shape)
        if kwargs['nr_logistic_mix'] is None:
            kwargs.pop('nr_logistic_mix')
        dropout_p = given.get('dropout_p', saved.get('dropout_p', cls.dropout_p))
        return cls(**kwargs, image_shape=image_shape, dropout_p=dropout_p)


def checkpoint_architecture(shapes, path):
    """The model config that variables of these shapes ({official name: shape}) imply:
    nr_resnet, nr_filters, nr_logistic_mix, energy_distance, channels, num_labels (0 when
    unconditional), and the resnet nonlinearities they allow (concat_elu doubles a block's
    input channels; elu and relu cannot be told apart)."""
    def count(kind):
        return sum(bool(re.fullmatch(r'%s_\d+/V' % kind, k)) for k in shapes)

    first = shapes['conv2d_0/V']
    channels, nr_filters = first[2] - 1, first[3]
    # 3 input convs, 4 downsamplings, 2 per block, 12 n + 4 blocks; 9 n + 4 short-cut nins
    nr_resnet, rest = divmod(count('conv2d') - 15, 24)
    head = count('dense') - (9 * nr_resnet + 4)
    if channels not in CHANNELS or rest or nr_resnet < 1 or head not in (1, 4):
        raise ValueError('%s: its variables are not those of a PixelCNN++ of any config '
                         '(%d conv2d, %d dense layers, conv2d_0/V of shape %s)'
                         % (path, count('conv2d'), count('dense'), tuple(first)))
    widen = shapes['conv2d_3/V'][2] // nr_filters  # the first gated resnet's conv1
    hw = shapes.get('conditional_weights_0/hw')
    config = dict(nr_resnet=nr_resnet, nr_filters=nr_filters, energy_distance=head == 4,
                  channels=channels, num_labels=0 if hw is None else hw[0],
                  nonlinearities=('concat_elu',) if widen == 2 else ('elu', 'relu'))
    if head == 1:
        out = shapes['dense_%d/V' % (count('dense') - 1)][1]
        config['nr_logistic_mix'] = out // MIXTURE_PARAMS[channels]
    return config


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The settings of a training run (the official train.py's flags beyond the model's, and
    ours). Those in FREE may change when a run is resumed; any other one would make the
    resumed run differ from an uninterrupted one."""
    data_set: str = 'cifar'        # DATA_SETS, or tfds:NAME[:SPLIT]
    data_dir: str = 'data'
    image_size: Optional[Tuple[int, int]] = None  # images resized and centre-cropped to (H, W); None: as they are
    held_out: float = HELD_OUT     # of a set without a test split: the share held out (seeded, fixed) to test on
    skip_unreadable: bool = False  # an empty or unreadable image file: skipped (named), instead of refused
    cache: str = ''                # a file to keep a folder's decoded images in (read from it on later runs)
    class_names: Optional[Tuple[str, ...]] = None  # the data's classes (label k is class_names[k]), recorded
    batch_size: int = 16           # per replica and micro-batch
    replicas: int = 1
    # each replica's batch split into accum_steps micro-batches whose gradients are summed, one
    # after the other, before the one update (a batch K times larger in one micro-batch's memory)
    accum_steps: int = 1
    learning_rate: float = 0.001   # learning_rate, lr_decay, polyak_decay: the official update rule (updates.py)
    lr_decay: float = 0.999995
    polyak_decay: float = 0.9995
    max_epochs: int = 5000
    max_steps_per_epoch: Optional[int] = None
    init_batch_size: int = 16
    save_interval: int = 20
    save_steps: int = 0
    save_minutes: float = 30.
    num_samples: int = 1
    seed: int = 1                  # the initial weights, dropout, mutation, the epochs' order
    # 'mixed_bfloat16' or 'mixed_float16': the compute dtype of training (variables, Adam, EMA
    # and the loss stay float32; float16 adds dynamic loss scaling); evaluation uses the
    # float32 EMA model in every case
    precision: str = 'float32'
    # mutation_rate, l2_weight: for background models of the likelihood ratio (Ren et al. 2019):
    # each sub-pixel of each training batch replaced with that probability by a uniform value
    # in 0..255 (stateless, from seed and the step, so a resumed run mutates alike);
    # l2_weight * (sum of the squared weights) added to the objective (not to the reported loss)
    mutation_rate: float = 0.
    l2_weight: float = 0.
    # the gated ResNet blocks' activations recomputed in the backward pass instead of kept (the
    # same numbers, about half the memory)
    recompute: bool = False
    xla: bool = False              # the loss and gradients compiled by XLA
    progress: bool = True

    FREE = ('data_dir', 'cache', 'max_epochs', 'init_batch_size', 'save_interval', 'save_steps', 'save_minutes',
            'num_samples', 'recompute', 'xla', 'progress')

    # recorded since these fields exist; a config.json without them is of a run that had their defaults
    DATA_FIELDS = ('image_size', 'held_out', 'skip_unreadable', 'cache', 'class_names')

    def __post_init__(self):
        check_data_set(self.data_set)
        object.__setattr__(self, 'image_size', check_image_size(self.image_size))
        _in_range(self, 'held_out', 0., 1., low_open=True, high_open=True)
        object.__setattr__(self, 'skip_unreadable', bool(self.skip_unreadable))
        if not isinstance(self.cache, str):
            raise ConfigError('{cache} is not a file path', cache=self.cache)
        if self.class_names is not None:
            names = self.class_names
            if isinstance(names, str) or not isinstance(names, (list, tuple)) or \
                    not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
                raise ConfigError('{class_names} is not a list of distinct names', class_names=names)
            object.__setattr__(self, 'class_names', tuple(names))
        if self.precision not in PRECISIONS:
            raise ConfigError('{precision} is not one of %s' % ', '.join(PRECISIONS), precision=self.precision)
        _positive_int(self, 'batch_size', 'replicas', 'accum_steps', 'max_epochs', 'init_batch_size',
                      'save_interval')
        if self.max_steps_per_epoch is not None:
            _positive_int(self, 'max_steps_per_epoch')
        for name in ('save_steps', 'num_samples'):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int) or \
                    getattr(self, name) < 0:
                raise ConfigError('{%s} is not an integer >= 0' % name, **{name: getattr(self, name)})
        if not isinstance(self.seed, int):
            raise ConfigError('{seed} is not an integer', seed=self.seed)
        _in_range(self, 'learning_rate', 0., float('inf'))
        _in_range(self, 'lr_decay', 0., 1., low_open=True)
        _in_range(self, 'polyak_decay', 0., 1., low_open=True)
        _in_range(self, 'mutation_rate', 0., 1.)
        _in_range(self, 'l2_weight', 0., float('inf'))
        _in_range(self, 'save_minutes', 0., float('inf'))

    @property
    def update_images(self):
        """The images of one update: replicas x accum_steps x batch_size."""
        return self.replicas * self.accum_steps * self.batch_size

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def field_names(cls):
    return tuple(f.name for f in dataclasses.fields(cls))


# ---------------------------------------------------------------------- config.json

def read(save_dir):
    """config.json of a run as a dict, or None where there is none."""
    path = os.path.join(save_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError('%s is not readable JSON (%s)' % (path, e)) from None
    if not isinstance(config, dict):
        raise ConfigError('%s: expected a JSON object of the run config' % path)
    return config


def write(save_dir, config):
    """Writes config.json (a dict, or a model and a train config) atomically: a failed
    write leaves the old one."""
    if isinstance(config, tuple):
        config = dict(config[0].to_dict(), **config[1].to_dict())
    files.write_atomically(os.path.join(save_dir, CONFIG_FILE), lambda f: json.dump(config, f, indent=1), 'w')


def run_configs(saved):
    """(ModelConfig, TrainConfig) of a run's config.json; an old one (model keys and the
    four run keys of earlier versions) gives the defaults for what it does not record."""
    try:
        return ModelConfig.from_dict(saved), TrainConfig.from_dict(saved)
    except TypeError as e:
        raise ConfigError('config.json does not hold a run config (%s)' % e) from None


def resume(saved, given, save_dir='.'):
    """The configs of a resumed run: config.json's (`saved`, a dict), with `given` ({field:
    value}, what the caller set explicitly) where allowed. Returns (ModelConfig,
    TrainConfig, changed, unrecorded): changed = [(field, old, new)] of the FREE fields given
    anew, unrecorded = the fields an older config.json does not hold (taken from `given` or
    the defaults; not TrainConfig.DATA_FIELDS, whose defaults are what runs before them
    did). A given value of any other field that differs from the saved one is a ConfigError
    naming the field and both values."""
    train_fields, model_fields = field_names(TrainConfig), field_names(ModelConfig)
    unknown = sorted(set(given) - set(train_fields) - set(model_fields))
    if unknown:
        raise TypeError('resume() got unknown fields %s' % unknown)
    merged, changed = dict(saved), []
    for key, value in given.items():
        old = saved.get(key)
        if isinstance(old, list) and isinstance(value, (list, tuple)):  # JSON has no tuples
            old, value = tuple(old), tuple(value)
        if key not in saved or old == value:
            merged[key] = value
        elif key in TrainConfig.FREE:
            changed.append((key, old, value))
            merged[key] = value
        else:
            raise ConfigError('{%s}, but the run in %s being resumed has {%s=_saved} (%s): a resumed run keeps it, '
                              'to be the run it would have been uninterrupted' % (key, save_dir, key, CONFIG_FILE),
                              **{key: value, '_saved': old})
    unrecorded = [k for k in train_fields if k not in saved and k not in TrainConfig.DATA_FIELDS]
    model, train = run_configs(merged)
    return model, train, changed, unrecorded


def resume_from(save_dir, given):
    """resume() on save_dir's config.json; a save_dir with no config.json is a
    ConfigError."""
    saved = read(save_dir)
    if saved is None:
        raise ConfigError('{save_dir} holds no %s: no run to continue ({resume} continues the run that '
                          '{save_dir:name} holds)' % CONFIG_FILE, save_dir=save_dir, resume=True)
    return resume(saved, given, save_dir)
