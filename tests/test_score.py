"""Out-of-distribution scoring: the metrics against hand-computed cases, score.py end to end
(image sets: test_images.py; a background model's mutation: test_data.py, its L2 term:
test_training.py)."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import pixel_cnn_pp
from pixel_cnn_pp import heatmaps, scoring
from conftest import FIXTURES, ROOT, run_in_process


@pytest.mark.parametrize('in_scores, ood_scores, auroc, auprc, fpr95', [
    # ood 2 ties with one in-score: (2 + 0.5 + 4) / 8; thresholds 4 (P 1), 3, 2 (P 2/4)
    ([0, 1, 2, 3], [2, 4], 6.5 / 8, 0.5 * 1 + 0.5 * 0.5, 2 / 4),
    ([0, 1], [2, 3], 1., 1., 0.),
    ([0, 1], [-1, -2], 0., 0.5 / 3 + 0.5 / 2, 1.),  # ranked backwards: reported as it is
    ([1, 1], [1, 1], 0.5, 0.5, 1.),
    ([0, 0, 0, 5], [1] * 19 + [-1], 0.75 * 0.95, 0.95 * 19 / 20 + 0.05 * 20 / 24, 1 / 4),
])
def test_metrics_against_hand_computed_cases(in_scores, ood_scores, auroc, auprc, fpr95):
    assert scoring.auroc(in_scores, ood_scores) == pytest.approx(auroc)
    assert scoring.auprc(in_scores, ood_scores) == pytest.approx(auprc)
    assert scoring.fpr_at_95_tpr(in_scores, ood_scores) == pytest.approx(fpr95)


def test_png_bits():
    rng = np.random.default_rng(0)
    images = np.stack([np.full((8, 8, 3), 7, np.uint8), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)])
    bits = scoring.png_bits(images)
    for image, b in zip(images, bits):
        png = tf.io.encode_png(image, compression=9)
        assert b == 8 * len(png.numpy())
        np.testing.assert_array_equal(tf.io.decode_png(png).numpy(), image)
    assert bits[0] < bits[1] / 2  # a constant image compresses, noise does not


def test_score_py_end_to_end(tmp_path):
    """Real-looking (smooth) images in, noise and a constant set out; the report, the CSV
    and the heat maps agree with log_prob."""
    ckpt = os.path.join(FIXTURES, 'official_configs', 'elu_r2_f16_m3', 'params.ckpt')
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 16)
    smooth = np.stack([np.stack([np.add.outer(ramp * a, ramp * (1 - a)) / 2] * 3, -1)
                       for a in rng.uniform(0, 1, 6)]).astype(np.uint8)
    np.savez(tmp_path / 'in.npz', x=smooth)
    np.savez(tmp_path / 'noise.npz', x=rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8))
    np.savez(tmp_path / 'const.npz', x=np.full((4, 20, 20, 1), 128, np.uint8))
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'score.py'), '--checkpoint=' + ckpt, '--resnet_nonlinearity=elu',
         '--image_size=16', '--in=%s' % (tmp_path / 'in.npz'), '--ood=%s' % (tmp_path / 'noise.npz'),
         '--ood=%s' % (tmp_path / 'const.npz'), '--background=' + ckpt, '--report=%s' % (tmp_path / 'r.json'),
         '--csv=%s' % (tmp_path / 's.csv'), '--heatmaps=%s' % (tmp_path / 'maps'), '--noprogress'],
        env={k: v for k, v in dict(os.environ, PYTHONPATH=ROOT).items() if k != 'TF_CPP_MIN_LOG_LEVEL'},
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ''  # a quiet console: nothing of TensorFlow's start-up
    assert out.stdout.startswith('loaded %s (EMA weights): ' % ckpt)
    assert 'const.npz: 4 images (grayscale repeated to 3 channels, height centre-cropped from 20 to 16, ' \
           'width centre-cropped from 20 to 16)' in out.stdout
    report = json.load(open(tmp_path / 'r.json'))
    assert set(report) == {'noise.npz', 'const.npz'}
    assert set(report['noise.npz']) == {'likelihood', 'complexity', 'likelihood_ratio'}
    rows = list(csv.DictReader(open(tmp_path / 's.csv')))
    assert len(rows) == 6 + 5 + 4
    model = pixel_cnn_pp.load(ckpt, resnet_nonlinearity='elu')
    bpd = pixel_cnn_pp.bits_per_dim(pixel_cnn_pp.log_prob(model, smooth), smooth.shape[1:])
    np.testing.assert_allclose([float(r['likelihood']) for r in rows[:6]], bpd, rtol=1e-5)
    assert all(abs(float(r['likelihood_ratio'])) < 1e-9 for r in rows)  # the same model as background
    scores = {s: np.array([float(r['likelihood']) for r in rows if r['set'] == s]) for s in ('in.npz', 'noise.npz')}
    assert report['noise.npz']['likelihood']['auroc'] == pytest.approx(
        scoring.auroc(scores['in.npz'], scores['noise.npz']))
    # one grid per set, the maps on the one scale of bits per sub-pixel, each pixel 4 x 4
    assert sorted(os.listdir(tmp_path / 'maps')) == ['%s_heatmaps_000.png' % s for s in ('const', 'in', 'noise')]
    grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / 'maps' / 'in_heatmaps_000.png'))).numpy()
    assert grid.shape[1] == 4 * 6 * (2 * 16 + 3)
    grid = grid[::4, ::4]
    bits = -pixel_cnn_pp.log_prob_map(model, smooth) / np.log(2.) / 3
    for k in range(6):
        np.testing.assert_array_equal(grid[:16, 35 * k:35 * k + 16], smooth[k])
        np.testing.assert_allclose(grid[:16, 35 * k + 17:35 * k + 33], heatmaps.colour(bits[k]), atol=1)


@pytest.mark.parametrize('args, message', [
    (['--in=x.npz'], '--checkpoint and --in are required'),
    (['--checkpoint={ckpt}', '--in={d}/a.npz', '--report={d}/r.json'], '--report is for --ood'),
    (['--checkpoint={ckpt}', '--in={d}/missing.npz', '--ood={d}/missing.npz'], 'missing.npz: no such file'),
    (['--checkpoint={ckpt}', '--in={d}/a.npz', '--ood={d}/a.npz', '--report={d}/no/r.json'],
     '--report=.*: its folder does not exist'),
])
def test_score_py_bad_input(tmp_path, args, message):
    ckpt = os.path.join(FIXTURES, 'official_small', 'params_cifar.ckpt')
    np.savez(tmp_path / 'a.npz', x=np.zeros((2, 32, 32, 3), np.uint8))
    _, _, err = run_in_process('score.py', *[a.format(d=tmp_path, ckpt=ckpt) for a in args], status=2)
    assert len(err.splitlines()) == 2 and err.splitlines()[1] == 'Run with --help for the flags.'
    assert re.search(message, err.splitlines()[0])
    assert sorted(os.listdir(tmp_path)) == ['a.npz']


def test_score_py_scores_a_set_alone(tmp_path):
    """--in without --ood: each image's bits/dim in --csv, their mean printed; equal to log_prob."""
    ckpt = os.path.join(FIXTURES, 'official_small', 'params_cifar.ckpt')
    x = np.random.default_rng(3).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / 'test.npz', x=x)
    _, out, err = run_in_process('score.py', '--checkpoint=' + ckpt, '--in=%s' % (tmp_path / 'test.npz'),
                                 '--csv=%s' % (tmp_path / 's.csv'), '--noprogress', status=0)
    bpd = pixel_cnn_pp.bits_per_dim(pixel_cnn_pp.log_prob(pixel_cnn_pp.load(ckpt), x), x.shape[1:])
    rows = list(csv.DictReader(open(tmp_path / 's.csv')))
    assert [r['set'] for r in rows] == ['test.npz'] * 5
    np.testing.assert_allclose([float(r['likelihood']) for r in rows], bpd, rtol=1e-5)
    assert 'test.npz: 5 images, %.4f bits/dim on average (likelihood)' % bpd.mean() in out
    assert 'auroc' not in out and err == ''


def test_score_py_names_the_set_it_cannot_fit(tmp_path):
    """RGB images against a grayscale model: the flag and the file named."""
    gray = tmp_path / 'gray'
    gray.mkdir()
    model = pixel_cnn_pp.PixelCNNPP(nr_resnet=1, nr_filters=4, nr_logistic_mix=2, image_shape=(8, 8, 1))
    model.build((None, 8, 8, 1))
    model.save(str(gray / 'm.keras'))
    np.savez(tmp_path / 'in.npz', x=np.zeros((2, 8, 8, 1), np.uint8))
    np.savez(tmp_path / 'rgb.npz', x=np.zeros((2, 8, 8, 3), np.uint8))
    _, _, err = run_in_process('score.py', '--checkpoint=%s' % (gray / 'm.keras'), '--in=%s' % (tmp_path / 'in.npz'),
                               '--ood=%s' % (tmp_path / 'rgb.npz'), status=2)
    assert err.splitlines()[0].startswith('score.py: error: --ood: %s: ' % (tmp_path / 'rgb.npz'))
    assert 'images of 3 channels cannot be fitted to 1' in err
