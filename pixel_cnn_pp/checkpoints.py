"""Reading checkpoints written by the official TF1 train.py (tf.train.Saver)."""

import tensorflow as tf

EMA_SUFFIX = '/ExponentialMovingAverage'


def _build_from_checkpoint(model, shapes):
    """Builds an unbuilt model with the image channels and conditioning size the
    checkpoint was trained with (its first conv sees C + 1 channels: the ones channel)."""
    first = shapes.get('model/conv2d_0/V')
    if first is None:
        raise ValueError('not an official PixelCNN++ checkpoint: no variable model/conv2d_0/V')
    x = tf.zeros([1, 4, 4, first[2] - 1])
    hw = shapes.get('model/conditional_weights_0/hw')
    model(x, h=None if hw is None else tf.zeros([1, hw[0]]))


def load_official_checkpoint(model, path, use_ema=True):
    """Loads a checkpoint of the official code (e.g. params_cifar.ckpt) into `model`, a
    PixelCNNPP of the same config; use_ema=True takes the Polyak-averaged shadows
    (`<name>/ExponentialMovingAverage`), as the official test and sampling do. An
    unbuilt model is built first. Adam slots (`Variable_N`) are ignored. Every variable
    is checked before any is assigned, so a checkpoint of another config raises a
    ValueError naming what is missing, mis-shaped or extra, and changes nothing."""
    reader = tf.train.load_checkpoint(path)
    shapes = reader.get_variable_to_shape_map()
    if not model.built:
        _build_from_checkpoint(model, shapes)
    wanted = model.official_variables()
    suffix = EMA_SUFFIX if use_ema else ''
    problems = []
    for name, var in wanted.items():
        key = 'model/' + name + suffix
        if key not in shapes:
            problems.append('missing %s (model expects shape %s)' % (key, tuple(var.shape)))
        elif tuple(shapes[key]) != tuple(var.shape):
            problems.append('%s has shape %s, model expects %s'
                            % (key, tuple(shapes[key]), tuple(var.shape)))
    extra = sorted(k for k in shapes if k.startswith('model/') and not k.endswith(EMA_SUFFIX)
                   and k[len('model/'):] not in wanted)
    problems += ['extra %s %s not in this model' % (k, tuple(shapes[k])) for k in extra]
    if problems:
        raise ValueError(
            'checkpoint %s does not match PixelCNNPP(nr_resnet=%d, nr_filters=%d, '
            'nr_logistic_mix=%d, energy_distance=%s, %s): %d problem(s), first: %s'
            % (path, model.nr_resnet, model.nr_filters, model.nr_logistic_mix,
               model.energy_distance, 'conditional' if model.conditional else 'unconditional',
               len(problems), '; '.join(problems[:5])))
    values = {name: reader.get_tensor('model/' + name + suffix) for name in wanted}
    for name, var in wanted.items():
        var.assign(values[name])
