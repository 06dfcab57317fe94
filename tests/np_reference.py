"""Independent NumPy (float64) transcriptions of the PixelCNN++ formulas, for tests."""

import numpy as np


def sigmoid(z):
    return np.exp(-np.logaddexp(0., -z))


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def logsumexp(z):
    m = z.max(-1)
    return m + np.log(np.exp(z - m[..., None]).sum(-1))


def mixture_params(l, channels):
    """logits (B,H,W,M), mu, log_s, coeffs (B,H,W,C,M) as the paper defines them."""
    per = 10 if channels == 3 else 3
    M = l.shape[-1] // per
    rest = l[..., M:].reshape(l.shape[:3] + (channels, -1))
    log_s = np.maximum(rest[..., M:2 * M], -7.)
    coeffs = np.tanh(rest[..., 2 * M:3 * M]) if channels == 3 else None
    return l[..., :M], rest[..., :M], log_s, coeffs


def mix_logistic_nll(x, l):
    """Per-image negative log-likelihood (nats) of 8-bit images x in [-1, 1] under the
    discretized logistic mixture l: mu_g += c0 r, mu_b += c1 r + c2 g; the end bins take
    the tails; a bin with mass below 1e-5 uses density * bin width."""
    x = x.astype(np.float64)
    l = l.astype(np.float64)
    C = x.shape[-1]
    logits, mu, log_s, c = mixture_params(l, C)
    mu = mu.copy()
    if C == 3:
        mu[..., 1, :] += c[..., 0, :] * x[..., 0, None]
        mu[..., 2, :] += c[..., 1, :] * x[..., 0, None] + c[..., 2, :] * x[..., 1, None]
    s = np.exp(log_s)
    xx = x[..., None]
    a = (xx + 1. / 255 - mu) / s  # upper bin edge
    b = (xx - 1. / 255 - mu) / s  # lower bin edge
    mass = sigmoid(a) - sigmoid(b)
    z = (xx - mu) / s
    log_density_times_width = -z - log_s - 2. * np.logaddexp(0., -z) + np.log(2. / 255)
    with np.errstate(divide='ignore'):
        log_inner = np.where(mass > 1e-5, np.log(mass), log_density_times_width)
    log_p = np.where(xx < -0.999, -np.logaddexp(0., -a),  # log P(X <= upper edge)
                     np.where(xx > 0.999, -np.logaddexp(0., b), log_inner))  # log P(X > lower)
    logp = log_p.sum(axis=3) + log_softmax(logits)
    return -logsumexp(logp).sum(axis=(1, 2))


def mix_logistic_sample(l, channels, u_mix, u, temperature=1.):
    """A sample of the mixture l from uniform noise: component k = argmax(logits / T + Gumbel
    noise), x = mu_k + T s_k logit(u), clipped to [-1, 1] channel by channel, with the RGB
    coupling applied to the clipped earlier channels."""
    logits, mu, log_s, c = mixture_params(l.astype(np.float64), channels)
    k = np.argmax(logits / temperature - np.log(-np.log(u_mix)), axis=-1)[..., None, None]
    pick = lambda a: np.take_along_axis(a, np.broadcast_to(k, a.shape[:-1] + (1,)), -1)[..., 0]  # noqa: E731
    x = pick(mu) + np.exp(pick(log_s)) * temperature * (np.log(u) - np.log(1. - u))
    out = [np.clip(x[..., 0], -1., 1.)]
    if channels == 3:
        c = pick(c)
        out.append(np.clip(x[..., 1] + c[..., 0] * out[0], -1., 1.))
        out.append(np.clip(x[..., 2] + c[..., 1] * out[0] + c[..., 2] * out[1], -1., 1.))
    return np.stack(out, -1)


def conv2d(x, W, pad, stride=(1, 1)):
    """Cross-correlation of x (B,H,W,Cin) with W (kh,kw,Cin,Cout) after zero padding
    pad = ((top, bottom), (left, right))."""
    x = np.pad(x, ((0, 0),) + tuple(pad) + ((0, 0),))
    kh, kw = W.shape[:2]
    oh = (x.shape[1] - kh) // stride[0] + 1
    ow = (x.shape[2] - kw) // stride[1] + 1
    out = np.zeros((x.shape[0], oh, ow, W.shape[3]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride[0] * oh:stride[0], j:j + stride[1] * ow:stride[1]]
            out += patch @ W[i, j]
    return out


def weight_norm(V, g, axes):
    return g * V / np.sqrt((V.astype(np.float64) ** 2).sum(axis=axes, keepdims=True))


def elu(z):
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))


NONLINEARITIES = {
    'concat_elu': lambda z: elu(np.concatenate([z, -z], -1)),
    'elu': elu,
    'relu': lambda z: np.maximum(z, 0),
}
