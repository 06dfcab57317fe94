"""Scores images with a trained PixelCNN++ and measures how well each score tells an
out-of-distribution (OOD) set from the in-distribution one.

    python score.py --checkpoint=save --in=tfds:cifar10:test --ood=tfds:svhn_cropped:test
    python score.py --checkpoint=save --in=test.npz --ood=other.npz --ood=photos/ \\
        --background=save_background --report=report.json --csv=scores.csv --heatmaps=maps

Scores, each oriented so that larger means more OOD:
- likelihood: bits/dim, -log2 p(x) / (H W C). Nalisnick et al. 2019 ("Do deep generative
  models know what they don't know?"): a PixelCNN++ trained on CIFAR-10 gives SVHN a higher
  likelihood than CIFAR-10 itself, so this score often ranks OOD sets as LESS OOD (AUROC
  below 0.5).
- complexity: bits/dim minus the image's PNG length in bits/dim (Serra et al. 2020, "Input
  complexity and out-of-distribution detection with likelihood-based generative models").
- likelihood_ratio (with --background): bits/dim minus those of a background model trained
  on perturbed inputs, train.py --mutation_rate (Ren et al. 2019, "Likelihood ratios for
  out-of-distribution detection").

For each --ood set against --in: AUROC, AUPRC and the FPR at 95% TPR, the OOD set positive.
Without --ood: the bits/dim of --in's images (their mean printed; each image's in --csv).

    python score.py --checkpoint=save --in=test.npz --csv=scores.csv
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # before TensorFlow: its C++ warnings hidden (0: all)
import pixel_cnn_pp  # noqa: E402,F401  (first: TensorFlow imported without its start-up notices)
import csv
import json
import re
import time

from absl import app, flags
import numpy as np

from pixel_cnn_pp import cli, files, heatmaps, scoring
from pixel_cnn_pp import images as image_lib

FLAGS = flags.FLAGS
cli.define_load_flags()
flags.adopt_module_key_flags(cli)
flags.DEFINE_string('in', None, 'The in-distribution images: an .npz (x or test_x), a folder '
                    'of image files (PNG, JPEG, BMP, GIF; DIR/test of a folder with train/ and test/), or '
                    'tfds:NAME[:SPLIT]; fitted to the model as in training')
flags.DEFINE_multi_string('ood', None, 'An out-of-distribution set (as --in); repeat for several')
flags.DEFINE_string('background', None, 'A background model (as --checkpoint), for the '
                    'likelihood_ratio score')
flags.DEFINE_string('data_dir', None, 'Where tensorflow-datasets finds (or downloads) tfds: sets; for '
                    'tfds:cifar10 also the CIFAR-10 python batches')
flags.DEFINE_integer('batch_size', 64, 'Images scored at once', lower_bound=1)
flags.DEFINE_string('report', None, 'Write {ood set: {score: {auroc, auprc, fpr95}}} as JSON here')
flags.DEFINE_string('csv', None, 'Write one row per image here: its set, index, file (of a folder) '
                    'and every score')
flags.DEFINE_string('heatmaps', None, 'Write into this folder grids of the images beside heat maps '
                    'of their bits per sub-pixel, %d images a PNG file, every map on one scale (see '
                    '--heatmap_max) with a colour bar' % heatmaps.PER_FILE)
flags.DEFINE_float('heatmap_max', heatmaps.MAX_BITS, 'With --heatmaps: the bits per sub-pixel shown '
                   'yellow (and anything above); 0 is black. 8 bits: a uniform guess', lower_bound=0.)
flags.DEFINE_boolean('heatmap_files', False, 'With --heatmaps: also one PNG file per image')

METRICS = {'auroc': scoring.auroc, 'auprc': scoring.auprc, 'fpr95': scoring.fpr_at_95_tpr}


def pixel_bits(model, images, label):
    """-log2 p(x_ij | x_<ij) of every pixel (N, H, W), batch by batch with a progress bar."""
    bar = cli.progress_bar(len(images), unit_name='image')
    out, start = [], time.time()
    for i in range(0, len(images), FLAGS.batch_size):
        out.append(-scoring.log_prob_map(model, images[i:i + FLAGS.batch_size]) / np.log(2.))
        bar.update(min(i + FLAGS.batch_size, len(images)))
    print('%s: %.1f images/s' % (label, len(images) / (time.time() - start)))
    return np.concatenate(out)


def write_heatmaps(folder, name, images, bits):
    """The grids of `name`'s images beside their maps of bits per sub-pixel, PER_FILE a file
    (name_heatmaps_000.png, ...), and with --heatmap_files one file per image (name_00000.png):
    all on the one scale 0..--heatmap_max."""
    os.makedirs(folder, exist_ok=True)
    name = re.sub(r'\.npz$', '', name).replace(':', '_').replace('/', '_')  # test.npz -> test
    per_subpixel = bits / images.shape[-1]
    zoom = heatmaps.default_zoom(images.shape[1:])
    paths = []
    for k, start in enumerate(range(0, len(images), heatmaps.PER_FILE)):
        paths.append(os.path.join(folder, '%s_heatmaps_%03d.png' % (name, k)))
        end = start + heatmaps.PER_FILE
        image_lib.write_png(paths[-1], heatmaps.grid(images[start:end], per_subpixel[start:end],
                                                     FLAGS.heatmap_max, zoom=zoom))
    if FLAGS.heatmap_files:
        for k in range(len(images)):
            image_lib.write_png(os.path.join(folder, '%s_%05d.png' % (name, k)),
                                heatmaps.grid(images[k:k + 1], per_subpixel[k:k + 1], FLAGS.heatmap_max,
                                              zoom=zoom))
    print('%s: heat maps in %s%s (black 0 to yellow %g or more bits per sub-pixel)'
          % (name, paths[0] if len(paths) == 1 else '%s .. %s' % (paths[0], os.path.basename(paths[-1])),
             ' and one file per image' if FLAGS.heatmap_files else '', FLAGS.heatmap_max))


def main(argv):
    del argv
    if not FLAGS.checkpoint or not FLAGS['in'].value:
        raise app.UsageError('--checkpoint and --in are required')
    if FLAGS.heatmap_max <= 0:
        raise app.UsageError('--heatmap_max must be > 0, got %g' % FLAGS.heatmap_max)
    for name in ('heatmap_max', 'heatmap_files'):
        if FLAGS[name].present and not FLAGS.heatmaps:
            raise app.UsageError('--%s is for --heatmaps' % name)
    if FLAGS.report and not FLAGS.ood:
        raise app.UsageError('--report is for --ood (its metrics); --csv writes the scores of --in alone')
    for flag in ('report', 'csv'):
        if FLAGS[flag].value and not os.path.isdir(os.path.dirname(FLAGS[flag].value) or '.'):
            raise app.UsageError('--%s=%s: its folder does not exist' % (flag, FLAGS[flag].value))
    model = cli.load_model(FLAGS.checkpoint, use_ema=FLAGS.ema)
    with cli.flag_errors():
        model.require('score with')
    background = None
    if FLAGS.background:
        background = cli.load_model(FLAGS.background, use_ema=FLAGS.ema)
        with cli.flag_errors(prefix='--background=%s: ' % FLAGS.background):
            background.require('score with')
    sets = [cli.read_image_set(spec, model.image_shape, FLAGS.data_dir, flag=flag, run=model.run_config)
            for flag, spec in [('in', FLAGS['in'].value)] + [('ood', spec) for spec in FLAGS.ood or []]]
    names = [name for name, _, _ in sets]
    if len(set(names)) != len(names):
        raise app.UsageError('two sets have the same name %s; give files or folders distinct names'
                             % names)
    dims = float(np.prod(model.image_shape))
    scores, rows = {}, []
    for name, images, paths in sets:
        bits = pixel_bits(model, images, name)
        bpd = bits.sum(axis=(1, 2)) / dims
        scores[name] = {'likelihood': bpd, 'complexity': bpd - scoring.png_bits(images) / dims}
        if background is not None:
            back = pixel_bits(background, images, name + ' (background)').sum(axis=(1, 2)) / dims
            scores[name]['likelihood_ratio'] = bpd - back
        rows += [dict({'set': name, 'index': k, 'file': paths[k] if paths else ''},
                      **{s: float(v[k]) for s, v in scores[name].items()}) for k in range(len(images))]
        if FLAGS.heatmaps:
            write_heatmaps(FLAGS.heatmaps, name, images, bits)
    in_name = names[0]
    print('\n%s: %d images, %.4f bits/dim on average (likelihood%s)' % (
        in_name, len(sets[0][1]), np.mean(scores[in_name]['likelihood']),
        ", a class-conditional model's marginal over its %d labels" % model.num_labels if model.num_labels else ''))
    report = {ood: {score: {metric: fn(scores[in_name][score], scores[ood][score])
                            for metric, fn in METRICS.items()}
                    for score in scores[in_name]}
              for ood in names[1:]}
    if report:
        print('in-distribution: %s; OOD is the positive class' % in_name)
        print('%-24s %-17s %7s %7s %7s' % ('ood set', 'score', 'auroc', 'auprc', 'fpr95'))
    for ood, by_score in report.items():
        for score, m in by_score.items():
            print('%-24s %-17s %7.4f %7.4f %7.4f' % (ood[:24], score, m['auroc'], m['auprc'], m['fpr95']))
    if FLAGS.report:
        files.write_atomically(FLAGS.report, lambda f: json.dump(report, f, indent=1), 'w')
    if FLAGS.csv:
        def write_csv(f):
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        files.write_atomically(FLAGS.csv, write_csv, 'w', newline='')


if __name__ == '__main__':
    cli.run(main)
