"""The log-likelihood of images under a PixelCNNPP: per image (log_prob) and per pixel
(log_prob_map), in nats, and bits per dimension. log_prob is minus the official per-image
loss, discretized_mix_logistic_loss(x, model(x), sum_all=False)."""

import weakref

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import config, nn
from pixel_cnn_pp.images import scale


def pixel_log_probs(model, images, h=None):
    """log p(x_ij | x_<ij) of uint8 images (B, H, W, C) as a (B, H, W) tensor, for use inside
    tf.function. A class-conditional model scores log p(x | h) given h, and without h the
    marginal over its labels, p(x) = mean over y of p(x | y), whose per-pixel terms are
    log p(x_<=ij) - log p(x_<ij) (raster order), so they still sum to log p(x)."""
    x = scale(images)
    if not model.num_labels or h is not None:
        return nn.discretized_mix_logistic_log_prob(x, model(x, h=h))
    K = model.num_labels
    batch = tf.shape(x)[0]

    def prefix_log_probs(y):  # log p(x_<=t | y) for every raster position t: (B, H * W)
        h_y = tf.one_hot(tf.fill([batch], y), K)
        pixels = nn.discretized_mix_logistic_log_prob(x, model(x, h=h_y))
        return tf.cumsum(tf.reshape(pixels, [batch, -1]), axis=1)

    prefix = tf.map_fn(prefix_log_probs, tf.range(K), fn_output_signature=tf.float32)
    prefix = tf.reduce_logsumexp(prefix, axis=0) - np.log(K)
    pixels = prefix - tf.pad(prefix[:, :-1], [[0, 0], [1, 0]])
    return tf.reshape(pixels, tf.shape(x)[:3])


def bits_per_dim(nats, image_shape):
    """-nats / (ln 2 * H * W * C): the official bits/dim of an image with log p(x) = nats."""
    return -np.asarray(nats) / (np.log(2.) * int(np.prod(image_shape)))


def _map_function(model, with_h):
    """One compiled per-pixel scoring function per model and conditioning, any batch and size."""
    signature = [tf.TensorSpec([None, None, None, model.channels], tf.uint8)]
    if with_h:
        signature.append(tf.TensorSpec([None, model.num_labels], tf.float32))
    model_ref = weakref.ref(model)  # the memo must not keep the model alive
    return model.memo(('log_prob_map', with_h), lambda: tf.function(
        lambda images, *h: pixel_log_probs(model_ref(), images, *h), input_signature=signature))


def _check(model, images, h):
    model.require('score with')
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError('images must be uint8 (N, H, W, C) pixel values 0..255, got %s' % images.dtype)
    config.check_images(images.shape, 'images', (model.channels,))
    if h is not None:
        if not model.num_labels:
            raise ValueError('this model is unconditional: h must be None')
        h = np.asarray(h, np.float32)
        if h.shape != (len(images), model.num_labels):
            raise ValueError('h must be (N, %d) = (%d, %d), got shape %s'
                             % (model.num_labels, len(images), model.num_labels, h.shape))
    return images, h


def log_prob_map(model, images, h=None, batch_size=64):
    """log p(x_ij | x_<ij) in nats of each pixel of uint8 images (N, H, W, C), channels
    together (the mixture couples them): a float32 array (N, H, W) that sums to log_prob.
    h: (N, num_labels) conditioning of a class-conditional model (one-hot labels); without
    it such a model scores the marginal over its labels."""
    images, h = _check(model, images, h)
    fn = _map_function(model, h is not None)
    out = [fn(images[i:i + batch_size], *([] if h is None else [h[i:i + batch_size]])).numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros(images.shape[:3], np.float32)


def log_prob(model, images, h=None, batch_size=64):
    """log p(x) in nats (<= 0) of each uint8 image (N, H, W, C): a float32 array (N,), minus
    the official per-image loss. h as for log_prob_map."""
    return log_prob_map(model, images, h, batch_size).sum(axis=(1, 2), dtype=np.float64).astype(np.float32)


def png_bits(images):
    """The length in bits of each uint8 image (N, H, W, C) as a PNG at compression 9: the
    complexity L(x) of Serra et al. 2020."""
    return np.array([8. * len(tf.io.encode_png(image, compression=9).numpy()) for image in images])


def auroc(in_scores, ood_scores):
    """Area under the ROC curve with the OOD set as the positive class and a larger score
    meaning more OOD: P(ood > in) + P(ood = in) / 2 (ties count half)."""
    in_scores, ood_scores = np.asarray(in_scores, np.float64), np.asarray(ood_scores, np.float64)
    below = np.searchsorted(np.sort(in_scores), ood_scores, side='left')
    not_above = np.searchsorted(np.sort(in_scores), ood_scores, side='right')
    return float(np.sum(below + not_above) / 2. / (len(in_scores) * len(ood_scores)))


def _thresholds(in_scores, ood_scores):
    """At each distinct score t, from the largest down: (true positives, false positives)
    of the rule score >= t."""
    scores = np.concatenate([ood_scores, in_scores]).astype(np.float64)
    is_ood = np.concatenate([np.ones(len(ood_scores)), np.zeros(len(in_scores))])
    order = np.argsort(-scores, kind='stable')
    scores, is_ood = scores[order], is_ood[order]
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    tp = np.cumsum(is_ood)[last_of_tie]
    return tp, np.cumsum(1. - is_ood)[last_of_tie]


def auprc(in_scores, ood_scores):
    """Area under the precision-recall curve (average precision, the OOD set positive):
    sum over thresholds of (recall step) x precision, tied scores as one threshold."""
    tp, fp = _thresholds(in_scores, ood_scores)
    recall_steps = np.diff(np.r_[0., tp]) / len(ood_scores)
    return float(np.sum(recall_steps * tp / (tp + fp)))


def fpr_at_95_tpr(in_scores, ood_scores):
    """The fraction of in-distribution images flagged at the largest threshold that flags
    at least 95% of the OOD images."""
    tp, fp = _thresholds(in_scores, ood_scores)
    return float(fp[np.argmax(tp >= 0.95 * len(ood_scores))] / len(in_scores))
