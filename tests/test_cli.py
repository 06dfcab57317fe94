"""The command-line layer every script shares (pixel_cnn_pp/cli.py, console.py,
pixel_cnn_pp/progress.py): exit statuses, the common flags, the line saying what was loaded,
a quiet console. In-process where the command line itself is not what is tested; two
subprocesses for what only the real scripts show (their --help and a bad flag)."""

import io
import os
import subprocess
import sys

from absl import app, flags
import numpy as np
import pytest
import tensorflow as tf

from pixel_cnn_pp import checkpoints, cli, config, console, progress
from pixel_cnn_pp import PixelCNNPP
from pixel_cnn_pp.training import Trainer

from conftest import ROOT, SMALL_CKPT, run_in_process  # noqa: E402
FLAGS = flags.FLAGS


def script(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, name)] + list(args), capture_output=True,
                          text=True, timeout=300, env={k: v for k, v in os.environ.items()
                                                       if k != 'TF_CPP_MIN_LOG_LEVEL'})


def test_a_bad_flag_is_a_usage_error():
    """absl's own flag errors exit 2 like ours, in two lines (not absl's FATAL and 1), with
    nothing of TensorFlow's start-up; sample.py knows the common --noprogress."""
    out = script('sample.py', '--noprogress', '--bogus=1')
    assert out.returncode == cli.USAGE
    assert out.stderr.splitlines() == ["sample.py: error: Unknown command line flag 'bogus'",
                                       'Run with --help for the flags.']


def test_help_exits_0_and_lists_the_common_flags(capsys):
    assert run_main(lambda argv: None, '--helpfull') == 0
    out = capsys.readouterr().out
    assert '--[no]progress' in out and '--[no]verbose' in out


@pytest.mark.parametrize('line, kept', [
    ('WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n', False),
    ('I0000 00:00:1796298383.136720    4718 port.cc:153] oneDNN custom operations are on.\n', False),
    ('I0000 00:00:1796298383.137141    4718 cudart_stub.cc:31] Could not find cuda drivers\n', False),
    ('To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow '
     'with the appropriate compiler flags.\n', False),
    ('E0000 00:00:1796298408.800176    4810 cuda_platform.cc:52] failed call to cuInit: INTERNAL: '
     'CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n', False),
    ('W0000 00:00:1796298413.855734    4810 dataset.cc:997] Input of GeneratorDatasetOp::Dataset '
     'will not be optimized\n', False),
    ('E0000 00:00:1796298408.800176    4810 bfc_allocator.cc:1] Out of memory\n', True),
    ('Traceback (most recent call last):\n', True),
    ('/x/y.py:3: DeprecationWarning: something\n', True),
])
def test_start_up_noise_is_dropped_and_errors_kept(line, kept):
    assert console.keep(line) is kept


def test_plain_progress_lines():
    """To a file: a line at every 10% and the last, no terminal codes; stateful metrics as
    given, the others averaged over the steps."""
    f = io.StringIO()
    bar = progress.PlainProgbar(40, stateful_metrics=['rate'], unit_name='image', file=f)
    losses = np.arange(40.)
    for k in range(40):
        bar.update(k + 1, [('loss', losses[k]), ('rate', 10. * k)])
    lines = f.getvalue().splitlines()
    assert len(lines) == 10 and '\x1b' not in f.getvalue() and '\r' not in f.getvalue()
    assert lines[0].startswith(' 4/40 images (10%) 0:00:00, ETA ')
    assert lines[-1] == '40/40 images (100%%) 0:00:00 - loss: %.4f - rate: %.4f' % (losses.mean(), 390.)
    assert lines[1].endswith('loss: %.4f - rate: %.4f' % (losses[:8].mean(), 70.))
    # not a terminal (pytest captures stdout): plain lines; --noprogress: Keras' silent bar
    assert isinstance(progress.bar(5), progress.PlainProgbar)
    assert progress.bar(5, enabled=False).verbose == 0


def test_no_gpu_line():
    paper = dict(nr_resnet=5, nr_filters=160)
    line = cli.note_no_gpu(paper, gpus=[])
    assert line.startswith('note: no GPU found') and cli.CPU_RECIPE in line
    assert '--nr_resnet=1 --nr_filters=32 --nr_logistic_mix=5' in line
    assert cli.note_no_gpu(paper, gpus=['GPU:0']) is None
    assert cli.note_no_gpu(dict(nr_resnet=1, nr_filters=32), gpus=[]) is None
    # the line points at the README's own CPU command
    with open(os.path.join(os.path.dirname(__file__), '..', 'README.md')) as f:
        assert 'python train.py --data_dir=data --save_dir=save_cpu ' + cli.CPU_RECIPE in f.read()


def run_main(main, *argv):
    """cli.run(main) in-process with these flags: its exit status."""
    argv0 = sys.argv
    sys.argv = ['prog'] + list(argv)
    try:
        with pytest.raises(SystemExit) as e:
            cli.run(main)
    finally:
        sys.argv = argv0
        FLAGS.verbose = False
    return e.value.code or 0


@pytest.mark.parametrize('error, status, message', [
    (app.UsageError('--x must be > 0'), cli.USAGE, 'prog: error: --x must be > 0\nRun with --help'),
    (FloatingPointError('training diverged at step 3'), cli.FAILED, 'prog: error: training diverged at step 3'),
    (OSError(28, 'No space left on device', 'save/ckpt-4.index'), cli.SYSTEM,
     'prog: error: No space left on device: save/ckpt-4.index'),
    (KeyboardInterrupt(), cli.INTERRUPTED, 'prog: error: interrupted'),
])
def test_exit_statuses(error, status, message, capsys):
    def main(argv):
        raise error
    assert run_main(main) == status
    err = capsys.readouterr().err
    assert err.startswith(message) and 'Traceback' not in err


def test_verbose_prints_the_flags(capsys):
    assert run_main(lambda argv: None) == 0
    assert 'input args' not in capsys.readouterr().out
    assert run_main(lambda argv: None, '--verbose') == 0
    assert 'input args:' in capsys.readouterr().out


@pytest.fixture(scope='module')
def save_dir(tmp_path_factory, one_replica):
    """A save_dir with ckpt-3 and a newer ckpt-5 whose data is truncated."""
    d = str(tmp_path_factory.mktemp('run'))
    trainer = Trainer(PixelCNNPP(nr_resnet=1, nr_filters=4, nr_logistic_mix=1, dropout_p=0., image_shape=(8, 8, 3)),
                      strategy=one_replica)
    trainer.initialize(np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32))
    config.write(d, (trainer.model_config, trainer.train_config))
    manager = tf.train.CheckpointManager(trainer.checkpoint, d, max_to_keep=3)
    manager.save(checkpoint_number=3)
    broken = manager.save(checkpoint_number=5)
    with open(broken + '.data-00000-of-00001', 'r+b') as f:
        f.truncate(10)
    return d, trainer


def test_the_loaded_line_names_the_checkpoint_read(save_dir, capsys):
    d, trainer = save_dir
    model = checkpoints.load(d, use_ema=False)
    assert capsys.readouterr().out.startswith('warning: skipping checkpoint %s' % os.path.join(d, 'ckpt-5'))
    assert cli.loaded_line(model, d, use_ema=False) == 'loaded %s (step 3, raw weights): %s parameters, 8x8x3 images' % (
        os.path.join(d, 'ckpt-3'), '{:,}'.format(trainer.model.count_params()))
    assert cli.loaded_line(trainer.model, 'm.keras').startswith('loaded m.keras (the weights it holds): ')


def test_a_keras_file_that_is_not_one(tmp_path):
    path = str(tmp_path / 'model.keras')
    with open(path, 'w') as f:
        f.write('not a zip')
    with pytest.raises(ValueError, match=r'model\.keras: not a readable \.keras file \(not a zip archive'):
        checkpoints.load(path)


def test_read_image_set(tmp_path, capsys):
    """Says what it read and what it did; a set smaller than the limit is read whole; a bad
    set is a usage error naming the flag."""
    np.savez(tmp_path / 'three.npz', x=np.arange(3 * 2 * 4)[:, None].repeat(3, 1).reshape(3, 2, 4, 3).astype(np.uint8))
    name, images, files = cli.read_image_set(str(tmp_path / 'three.npz'), (4, 4, 3), limit=5)
    assert name == 'three.npz' and images.shape == (3, 4, 4, 3) and files is None
    assert capsys.readouterr().out == 'three.npz: 3 images (height zero-padded from 2 to 4), read from the .npz key x\n'
    with pytest.raises(app.UsageError, match=r'^--complete: .*missing\.npz: no such file'):
        cli.read_image_set(str(tmp_path / 'missing.npz'), (4, 4, 3), flag='complete')


def test_scripts_say_what_the_library_refuses(tmp_path):
    """Each script asks the library's own check (sampling.check, PixelCNNPP.require,
    serving.Serving) before it reads a set or writes anything, and says its ConfigError with
    flags: an energy-distance model everywhere a likelihood is needed (as --background too),
    the sampler's arguments (those that need no model before it is loaded: a checkpoint that
    does not exist is not reached)."""
    from pixel_cnn_pp import PixelCNNPP
    energy = PixelCNNPP(nr_resnet=1, nr_filters=4, energy_distance=True, image_shape=(8, 8, 3))
    energy(np.zeros((1, 8, 8, 3), np.float32))
    ckpt = str(tmp_path / 'energy.keras')
    energy.save(ckpt)
    np.savez(tmp_path / 'a.npz', x=np.zeros((2, 8, 8, 3), np.uint8))
    a, out, small = str(tmp_path / 'a.npz'), str(tmp_path / 'new' / 'out'), SMALL_CKPT
    for args, message in [
            (['sample.py', '--checkpoint=' + ckpt, '--out=' + out],
             '--method=fast needs a mixture model (the energy-distance head draws fresh noise each pass): use '
             '--method=naive'),
            (['sample.py', '--checkpoint=' + ckpt, '--complete=tfds:not_read:test', '--data_dir=' + out],
             '--method=fast needs a mixture model (the energy-distance head draws fresh noise each pass): use '
             '--method=naive'),
            (['sample.py', '--checkpoint=' + small, '--image_size=8', '--complete=' + a, '--given_rows=9',
              '--out=' + out], '--given_rows=9 is not an integer in [0, 8] (the image has 8 rows)'),
            (['score.py', '--checkpoint=' + ckpt, '--in=' + a, '--ood=' + a, '--heatmaps=' + out],
             'an energy-distance model has no likelihood to score with'),
            (['score.py', '--checkpoint=' + small, '--background=' + ckpt, '--in=' + a, '--ood=' + a,
              '--heatmaps=' + out], '--background=%s: an energy-distance model has no likelihood to score with'
             % ckpt),
            (['compress.py', '--checkpoint=' + ckpt, '--in=' + a, '--out=' + out],
             'an energy-distance model has no likelihood to code with'),
            (['export.py', '--checkpoint=' + ckpt, '--out=' + out],
             'an energy-distance model has no likelihood to export as a SavedModel; use --format=keras'),
            (['sample.py', '--checkpoint=/nonexistent', '--temperature=0'], '--temperature=0.0 is not > 0'),
            (['sample.py', '--checkpoint=/nonexistent', '--jit_compile', '--method=naive'],
             '--jit_compile is for --method=fast (it compiles the fast sampler)')]:
        _, _, err = run_in_process(*args, status=cli.USAGE)
        assert err == '%s: error: %s\nRun with --help for the flags.\n' % (args[0], message)
    assert sorted(os.listdir(tmp_path)) == ['a.npz', 'energy.keras']
