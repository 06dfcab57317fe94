#!/usr/bin/env bash
# Makes the README's figures (docs/images/*.png) with the project's own scripts, from a model
# trained with the README's CPU recipe. Run from the repository's root:
#
#   bash docs/images/make_figures.sh [SAVE_DIR] [TEST_SET] [DATA_DIR]
#
# SAVE_DIR: the run (default save_cpu); TEST_SET: the images to complete, as sample.py's
# --complete reads them (default tfds:cifar10:test); DATA_DIR: where tensorflow-datasets
# finds it (default data). The README's figure was made with
#   bash docs/images/make_figures.sh /work/runs/cpu_small ../shared/data/cifar10_subset.npz
# (the 5,085-image CIFAR-10 subset's test images). Sampling uses the raw weights (--noema):
# after 8 short epochs the Polyak average still lags far behind them.
set -euo pipefail
SAVE=${1:-save_cpu}
SET=${2:-tfds:cifar10:test}
DATA=${3:-data}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

nice -n 10 python sample.py --checkpoint="$SAVE" --noema --num_samples=16 --seed=1 \
    --out="$OUT/samples"
nice -n 10 python sample.py --checkpoint="$SAVE" --noema --complete="$SET" --data_dir="$DATA" \
    --num_samples=4 --given_rows=16 --samples_per_image=3 --seed=1 --out="$OUT/completions"

# The two grids side by side, each pixel drawn as 3x3 (nearest neighbour) so a reader sees it.
nice -n 10 python - "$OUT" docs/images/samples_completions.png <<'PY'
import os, sys
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import numpy as np
import tensorflow as tf

out, target = sys.argv[1:]
grids = [tf.io.decode_png(tf.io.read_file(os.path.join(out, name + '.png')), channels=3).numpy()
         for name in ('samples', 'completions')]
height = max(g.shape[0] for g in grids)
padded = [np.pad(g, [(0, height - g.shape[0]), (0, 0), (0, 0)], constant_values=255) for g in grids]
gap = np.full([height, 8, 3], 255, np.uint8)
figure = np.concatenate([padded[0], gap, padded[1]], axis=1).repeat(3, axis=0).repeat(3, axis=1)
tf.io.write_file(target, tf.io.encode_png(figure, compression=9))
print('wrote %s: %dx%d, %d bytes' % (target, figure.shape[1], figure.shape[0], os.path.getsize(target)))
PY

# Per-pixel bits: score.py --heatmaps on the first 8 test images and on 8 uniform-noise images
# (one fixed scale of bits per sub-pixel, its colour bar under each grid).
nice -n 10 python - "$SET" "$DATA" "$OUT" <<'PY'
import os, sys
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import numpy as np

spec, data_dir, out = sys.argv[1:]
if spec.endswith('.npz'):
    with np.load(spec) as f:
        test = f['x' if 'x' in f else 'test_x'][:8]
else:  # tfds:NAME:SPLIT
    import tensorflow_datasets as tfds
    _, name, split = spec.split(':')
    test = tfds.as_numpy(tfds.load(name, split=split + '[:8]', data_dir=data_dir, batch_size=-1))['image']
np.savez(os.path.join(out, 'test.npz'), x=test)
np.savez(os.path.join(out, 'noise.npz'), x=np.random.default_rng(0).integers(0, 256, test.shape, np.uint8))
PY
nice -n 10 python score.py --checkpoint="$SAVE" --noema --in="$OUT/test.npz" --ood="$OUT/noise.npz" \
    --heatmaps="$OUT/maps" --csv="$OUT/scores.csv"

nice -n 10 python - "$OUT" docs/images/heatmaps.png <<'PY'
import csv, glob, os, sys
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import numpy as np
import tensorflow as tf

out, target = sys.argv[1:]
grids = [tf.io.decode_png(tf.io.read_file(path), channels=3).numpy()
         for path in (glob.glob(os.path.join(out, 'maps', 'test*_000.png'))
                      + glob.glob(os.path.join(out, 'maps', 'noise*_000.png')))]
width = max(g.shape[1] for g in grids)
grids = [np.pad(g, [(0, 8), (0, width - g.shape[1]), (0, 0)], constant_values=255) for g in grids]
tf.io.write_file(target, tf.io.encode_png(np.concatenate(grids), compression=9))
with open(os.path.join(out, 'scores.csv')) as f:
    rows = list(csv.DictReader(f))
for name in sorted({r['set'] for r in rows}):
    bpd = [float(r['likelihood']) for r in rows if r['set'] == name]
    print('%s: %.2f bits/dim on average (%.2f to %.2f)' % (name, np.mean(bpd), min(bpd), max(bpd)))
print('wrote %s: %d bytes' % (target, os.path.getsize(target)))
PY
