"""train.py end to end on tiny configs and data the tests write (no network)."""

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

from absl import app, flags
from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf

import train
import pixel_cnn_pp
from pixel_cnn_pp import checkpoints, savedir
from pixel_cnn_pp.training import Trainer
from conftest import FIXTURES, ROOT, free_ports, script_env
TINY = ['--nr_resnet=1', '--nr_filters=8', '--nr_logistic_mix=2', '--batch_size=4',
        '--init_batch_size=4', '--noprogress', '--seed=7']
LINE = re.compile(r'^Iteration (\d+), time = \d+s, train bits_per_dim = (\d+\.\d{4}), '
                  r'test bits_per_dim = (\d+\.\d{4})$', re.M)


def write_npz(path, n_train=24, n_test=6, size=8, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, train_x=rng.integers(0, 256, (n_train, size, size, 3), dtype=np.uint8),
             train_y=np.arange(n_train) % 10, test_x=rng.integers(0, 256, (n_test, size, size, 3),
                                                                   dtype=np.uint8),
             test_y=np.arange(n_test) % 10)  # every class of 0..9 occurs
    return str(path)


def run_train(args):
    """train.py's main in this process, flags restored afterwards."""
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(['train.py'] + args)
        train.main([])


def final_params(save_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(save_dir))
    return {k: reader.get_tensor(k) for k, _ in tf.train.list_variables(tf.train.latest_checkpoint(save_dir))
            if k.startswith(('params/', 'ema/', 'adam/'))}


def train_process(args, **env):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py')] + args,
                            env=script_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc):
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    return out


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Two epochs of 6 steps then a resumed third epoch, three epochs straight, and three
    accumulating two micro-batches, each through train.py's main in this process (its console
    output kept; the command line itself: the subprocess tests below)."""
    d = tmp_path_factory.mktemp('train')
    data = write_npz(d / 'data.npz')
    common = TINY + ['--data_set=npz', '--data_dir=' + data, '--dropout_p=0', '--save_interval=1']

    def logged(args):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            run_train(args)
        return out.getvalue()

    logs = {'resumed': logged(common + ['--save_dir=%s' % (d / 'resumed'), '--max_epochs=2']),
            'straight': logged(common + ['--save_dir=%s' % (d / 'straight'), '--max_epochs=3', '--num_samples=0']),
            'accum': logged(common + ['--save_dir=%s' % (d / 'accum'), '--max_epochs=3', '--num_samples=0',
                                      '--batch_size=2', '--accum_steps=2'])}
    # (no samples of the third epoch: --num_samples may change on a resume, and the first two are checked)
    logs['resumed_part2'] = logged(common + ['--save_dir=%s' % (d / 'resumed'), '--max_epochs=3', '--load_params',
                                            '--num_samples=0'])
    return d, logs, common


ONE_WORKER = pytest.mark.xdist_group('train_cli_trained')  # the tests of `trained`: trained once


@ONE_WORKER
def test_official_console_lines_and_outputs(trained):
    d, logs, _ = trained
    lines = LINE.findall(logs['resumed'])
    assert [int(i) for i, _, _ in lines] == [0, 1]
    assert all(4 < float(bpd) < 16 for line in lines for bpd in line[1:])  # random 8-bit data: ~8
    save = d / 'resumed'
    for epoch in (0, 1):
        samples = np.load(save / ('npz_sample%d.npz' % epoch))['samples']
        assert samples.shape == (4, 8, 8, 3) and samples.dtype == np.uint8
        png = tf.io.decode_png(tf.io.read_file(str(save / ('npz_sample%d.png' % epoch))))
        assert png.shape == (2 * 9 + 1, 2 * 9 + 1, 3)  # 4 images on a 2x2 grid, 1-pixel borders
    history = np.load(save / 'test_bpd_npz.npz')['test_bpd']
    np.testing.assert_allclose(history[:2], [float(t) for _, _, t in lines], atol=5e-5)
    assert json.load(open(save / 'config.json'))['nr_filters'] == 8
    assert any(f.startswith('events.out.tfevents') for f in os.listdir(save / 'tensorboard'))
    assert not [p for p in os.listdir(save) if p == 'lock' or '.tmp' in p or p.endswith('_temp')]  # released


@ONE_WORKER
def test_resume_continues_exactly(trained):
    d, logs, _ = trained
    assert 'restoring parameters from' in logs['resumed_part2']
    assert [int(i) for i, _, _ in LINE.findall(logs['resumed_part2'])] == [2]
    resumed, straight = final_params(d / 'resumed'), final_params(d / 'straight')
    assert resumed.keys() == straight.keys()
    step = [k for k in resumed if k.startswith('adam/step')][0]
    assert resumed[step] == straight[step] == 3 * 6  # 24 images // 4 per step, 3 epochs
    lr = [k for k in resumed if k.startswith('adam/lr')][0]
    assert resumed[lr] == pytest.approx(0.001 * 0.999995 ** 18, rel=1e-12)
    for k in resumed:
        np.testing.assert_array_equal(resumed[k], straight[k], err_msg=k)


@ONE_WORKER
def test_accumulation_trains_as_the_large_batch(trained):
    """--batch_size=2 --accum_steps=2 trains as --batch_size=4 (dropout 0): the same updates
    (step counter, learning rate), weights to float round-off, test bits/dim to 5e-4;
    config.json records --accum_steps and --recompute. (--recompute with dropout:
    test_training.)"""
    d, logs, common = trained
    assert 'each update: 1 replica(s) x 2 micro-batch(es) x 2 images = 4 images' in logs['accum']
    accum, straight = final_params(d / 'accum'), final_params(d / 'straight')
    step, lr = [k for k in accum if k.startswith('adam/step')][0], [k for k in accum if k.startswith('adam/lr')][0]
    assert accum[step] == straight[step] == 18 and accum[lr] == straight[lr]
    for k in accum:
        if k.startswith(('params/', 'ema/')):
            np.testing.assert_allclose(accum[k], straight[k], rtol=0, atol=1e-4, err_msg=k)  # 18 steps of 1e-3
    for (_, train_a, test_a), (_, train_b, test_b) in zip(LINE.findall(logs['accum']), LINE.findall(logs['straight'])):
        assert abs(float(test_a) - float(test_b)) <= 5e-4 and abs(float(train_a) - float(train_b)) <= 5e-4
    config = json.load(open(d / 'accum' / 'config.json'))
    assert config['accum_steps'] == 2 and config['recompute'] is False
    resume = common + ['--save_dir=%s' % (d / 'accum'), '--load_params', '--max_epochs=3', '--batch_size=2']
    with pytest.raises(app.UsageError, match='--accum_steps=4, but the run in .* being resumed has --accum_steps=2'):
        run_train(resume + ['--accum_steps=4'])


@ONE_WORKER
def test_eval_mode_prints_test_bits_per_dim(trained, capsys):
    d, logs, common = trained
    run_train(common + ['--save_dir=%s' % (d / 'straight'), '--mode=eval'])
    printed = re.search(r'^test bits_per_dim = (\d+\.\d{4}) \(EMA weights\)$', capsys.readouterr().out, re.M)
    last_epoch = LINE.findall(logs['straight'])[-1][2]
    assert printed.group(1) == last_epoch


@ONE_WORKER
def test_eval_mode_of_the_raw_weights(trained, capsys):
    """--noema: the raw weights' test bits/dim, as log_prob of those weights gives it."""
    d, _, common = trained
    run_train(common + ['--save_dir=%s' % (d / 'straight'), '--mode=eval', '--noema'])
    printed = re.search(r'^test bits_per_dim = (\d+\.\d{4}) \(raw weights\)$', capsys.readouterr().out, re.M)
    test_x = np.load([a[len('--data_dir='):] for a in common if a.startswith('--data_dir=')][0])['test_x']
    raw = pixel_cnn_pp.load(str(d / 'straight'), use_ema=False)
    expected = pixel_cnn_pp.bits_per_dim(pixel_cnn_pp.log_prob(raw, test_x).mean(), test_x.shape[1:])
    assert printed.group(1) == '%.4f' % expected
    ema = pixel_cnn_pp.load(str(d / 'straight'))
    assert abs(expected - pixel_cnn_pp.bits_per_dim(pixel_cnn_pp.log_prob(ema, test_x).mean(), test_x.shape[1:])) > 1e-3


@ONE_WORKER
def test_eval_without_model_flags(trained, capsys):
    """The model flags come from the run's config.json."""
    d, logs, common = trained
    data = [a for a in common if a.startswith('--data')]
    run_train(data + ['--save_dir=%s' % (d / 'straight'), '--mode=eval', '--batch_size=4'])
    printed = re.search(r'^test bits_per_dim = (\d+\.\d{4}) \(EMA weights\)$', capsys.readouterr().out, re.M)
    assert printed.group(1) == LINE.findall(logs['straight'])[-1][2]


def test_eval_of_official_checkpoint(tmp_path, capsys):
    """The official EMA loss of the reference run's 4 images, as bits/dim; no model flags
    (read from the checkpoint), and nothing written."""
    ref = np.load(os.path.join(FIXTURES, 'official_small', 'ref.npz'))
    x = np.rint(ref['x'] * 127.5 + 127.5).astype(np.uint8)
    np.savez(tmp_path / 'ref.npz', train_x=x, test_x=x)
    run_train(['--mode=eval', '--data_set=npz', '--data_dir=%s' % (tmp_path / 'ref.npz'),
               '--save_dir=%s' % (tmp_path / 'save'), '--batch_size=3',
               '--checkpoint=' + os.path.join(FIXTURES, 'official_small', 'params_cifar.ckpt')])
    expected = float(ref['loss_ema']) / (4 * 32 * 32 * 3 * np.log(2.))
    assert 'test bits_per_dim = %.4f' % expected in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ['ref.npz']


@pytest.mark.parametrize('args, message', [
    (['--data_set=npz', '--data_dir=/nonexistent/data.npz'], 'needs --data_dir to be an .npz file'),
    (['--data_set=imagenet', '--data_dir=/nonexistent'], 'nothing in --data_dir=/nonexistent; expected the original'),
    (['--batch_size=0'], 'flag --batch_size=0: 0 is not a positive integer'),
    (['--nr_logistic_mix=0'], 'flag --nr_logistic_mix=0: 0 is not a positive integer'),
    (['--learning_rate=-1'], 'flag --learning_rate=-1: -1.0 is not a non-negative number'),
    (['--polyak_decay=2'], r'flag --polyak_decay=2: 2.0 is not a number in the range \[0.0, 1.0\]'),
    (['--polyak_decay=0'], r'--polyak_decay must be in \(0, 1\], got 0'),
    (['--lr_decay=0'], r'--lr_decay must be in \(0, 1\], got 0'),
    (['--dropout_p=1'], r'--dropout_p must be in \[0, 1\)'),
    (['--save_steps=-1'], 'flag --save_steps=-1: -1 is not a non-negative integer'),
    (['--checkpoint=x.ckpt'], '--checkpoint is for --mode=eval'),
    (['--noema'], '--noema is for --mode=eval'),
    (['--precision=float64'], 'flag --precision=float64: value should be one of'),
])
def test_bad_flags(args, message, tmp_path):
    with pytest.raises((app.UsageError, flags.Error), match=message):
        run_train(['--save_dir=%s' % tmp_path] + args)


def test_unknown_data_set():
    with pytest.raises(app.UsageError, match=r'^--data_set=mnist is not one of cifar, imagenet, npz, folder, or '
                                             r'tfds:NAME\[:SPLIT\]$'):
        run_train(['--data_set=mnist'])


def test_image_size_not_divisible_by_4(tmp_path):
    data = write_npz(tmp_path / 'odd.npz', size=10)
    with pytest.raises(app.UsageError, match=r'npz train images must have a height and width that are positive multiples of 4.*\(\d+, 10, 10, 3\)'):
        run_train(TINY + ['--data_set=npz', '--data_dir=' + data, '--save_dir=%s' % tmp_path])


@ONE_WORKER
def test_checkpoint_dir_errors(trained, tmp_path):
    d, _, common = trained
    with pytest.raises(app.UsageError, match=r'already holds checkpoints \(ckpt-18\): pass --load_params'):
        run_train(common + ['--save_dir=%s' % (d / 'straight')])
    with pytest.raises(app.UsageError, match=r'--nr_filters=16, but the run in .* being resumed has --nr_filters=8'):
        run_train(common + ['--save_dir=%s' % (d / 'straight'), '--load_params', '--nr_filters=16'])
    with pytest.raises(app.UsageError, match='--save_dir=.* holds no config.json: no run to continue .--load_params continues'):
        run_train(common + ['--save_dir=%s' % tmp_path, '--load_params'])
    with pytest.raises(app.UsageError, match='is a folder with no checkpoint in it'):
        run_train(common + ['--save_dir=%s' % tmp_path, '--mode=eval'])


def test_nan_loss_stops_and_the_failed_first_run_leaves_nothing(tmp_path, monkeypatch):
    initialize = Trainer.initialize

    def poisoned(self, *args):
        initialize(self, *args)
        self.params['conv2d_0/V'].assign(tf.fill(self.params['conv2d_0/V'].shape, np.nan))

    monkeypatch.setattr(Trainer, 'initialize', poisoned)
    data = write_npz(tmp_path / 'data.npz')
    with pytest.raises(FloatingPointError, match='diverged at step 1: the loss is nan'):
        run_train(TINY + ['--data_set=npz', '--data_dir=' + data, '--save_dir=%s' % (tmp_path / 's')])
    assert not os.path.exists(tmp_path / 's')  # no config.json, TensorBoard file or lock left


def all_checkpoints_finite(save_dir):
    for prefix in checkpoints.run_checkpoints(str(save_dir)):
        reader = tf.train.load_checkpoint(prefix)
        for k in reader.get_variable_to_shape_map():
            value = np.asarray(reader.get_tensor(k))
            if value.dtype.kind == 'f':
                assert np.isfinite(value).all(), (prefix, k)


@pytest.mark.slow
def test_diverging_run_exits_non_zero_and_checkpoints_stay_finite(tmp_path):
    data = write_npz(tmp_path / 'data.npz', n_train=48)
    save = tmp_path / 'save'
    proc = train_process(TINY + ['--data_set=npz', '--data_dir=' + data, '--save_dir=%s' % save,
                                 '--learning_rate=1e6', '--lr_decay=1', '--save_steps=1',
                                 '--max_epochs=4', '--num_samples=0'])
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 1, out
    message = re.search(r'train.py: error: training diverged at step (\d+): the loss is \S+ .*', out).group(0)
    assert 'learning rate 1e+06' in message and 'Try a lower --learning_rate' in message
    step = int(re.search(r'at step (\d+)', message).group(1))
    assert tf.train.latest_checkpoint(str(save)).endswith('ckpt-%d' % (step - 1))
    assert message.endswith('The latest checkpoint, %s, is from before it.' % tf.train.latest_checkpoint(str(save)))
    all_checkpoints_finite(save)


def test_offline_first_run_fails_fast_naming_the_local_routes(tmp_path):
    """No network (a proxy that refuses every connection): one short message within 90 s."""
    began = time.time()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--data_dir=%s' % (tmp_path / 'data'),
                           '--save_dir=%s' % (tmp_path / 'save')], capture_output=True, text=True,
                          env=script_env(HTTPS_PROXY='http://127.0.0.1:9', HTTP_PROXY='http://127.0.0.1:9',
                                             https_proxy='http://127.0.0.1:9', http_proxy='http://127.0.0.1:9',
                                             NO_PROXY='', no_proxy=''), timeout=300)
    assert time.time() - began < 90
    assert proc.returncode == 2
    error = proc.stderr[proc.stderr.index('train.py: error:'):].strip().splitlines()
    assert len(error) == 2 and 'cannot be downloaded' in error[0]
    assert 'cifar-10-batches-py' in error[0] and '--data_set=npz' in error[0]
    assert not os.path.exists(tmp_path / 'save') and not os.path.exists(tmp_path / 'data')


def test_short_usage_errors_from_the_command_line(tmp_path):
    """The process: an absl flag error is a short stderr and a non-zero exit, nothing written.
    (The library's usage errors, the same path in this process: test_short_usage_errors.)"""
    data = write_npz(tmp_path / 'data.npz', n_train=8)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--data_set=npz',
                           '--data_dir=' + data, '--save_dir=%s' % (tmp_path / 'save'), '--batch_size=0'],
                          capture_output=True, text=True, env=script_env())
    lines = [line for line in proc.stderr.splitlines() if not re.match(r'^[IWE]\d{4}|^WARNING: All log', line)]
    assert proc.returncode != 0 and len(lines) <= 3 and 'flag --batch_size=0' in lines[0], proc.stderr
    assert not os.path.exists(tmp_path / 'save')


@pytest.mark.parametrize('args, message', [
    (['--init_batch_size=9', '--batch_size=4'], '--init_batch_size=9 is more than the 8 training images'),
    (['--batch_size=9'], '--batch_size=9 x 1 replica(s) x --accum_steps=1 is more than the 8 training images')])
def test_short_usage_errors(tmp_path, args, message):
    """Too few images for a batch: a message of at most two lines, before anything is written."""
    data = write_npz(tmp_path / 'data.npz', n_train=8)
    with pytest.raises(app.UsageError, match=re.escape(message)) as e:
        run_train(['--data_set=npz', '--data_dir=' + data, '--save_dir=%s' % (tmp_path / 'save')] + args)
    assert len(str(e.value).splitlines()) <= 2
    assert not os.path.exists(tmp_path / 'save')


@pytest.mark.parametrize('problem', ['truncated', 'negative labels', 'label count'])
def test_bad_npz_is_one_message(tmp_path, problem):
    path = write_npz(tmp_path / 'data.npz')
    if problem == 'truncated':
        with open(path, 'r+b') as f:
            f.truncate(os.path.getsize(path) // 2)
        message = 'is not a readable .npz'
    else:
        d = dict(np.load(path))
        d['train_y'] = d['train_y'] - 1 if problem == 'negative labels' else d['train_y'][:-1]
        np.savez(path, **d)
        message = 'train_y must be %d integer labels >= 0' % (24 if problem == 'negative labels' else 24)
    with pytest.raises(app.UsageError, match=message):
        run_train(TINY + ['--data_set=npz', '--data_dir=' + path, '--save_dir=%s' % (tmp_path / 's'),
                          '--class_conditional'])
    assert not os.path.exists(tmp_path / 's')


def test_unwritable_save_dir_and_corrupt_config(tmp_path):
    data = write_npz(tmp_path / 'data.npz')
    open(tmp_path / 'file', 'w').close()
    with pytest.raises(app.UsageError, match='--save_dir=.*file/save cannot be written'):
        run_train(TINY + ['--data_set=npz', '--data_dir=' + data, '--save_dir=%s' % (tmp_path / 'file' / 'save')])
    os.makedirs(tmp_path / 'run')
    with open(tmp_path / 'run' / 'config.json', 'w') as f:
        f.write('{"nr_resnet": 1, "nr_fil')
    with pytest.raises(app.UsageError, match='config.json is not readable JSON'):
        run_train(TINY + ['--data_set=npz', '--data_dir=' + data, '--save_dir=%s' % (tmp_path / 'run'),
                          '--load_params'])


def test_one_run_per_save_dir(tmp_path):
    """train.py's words for savedir.Lock's refusals (the lock itself: test_savedir.py): a live
    lock names its owner and --save_dir; another host's lock file is refused and left in place;
    neither run starts (no config.json). (Released at a run's end: the trained tests.)"""
    data = write_npz(tmp_path / 'data.npz')
    save = tmp_path / 'save'
    args = TINY + ['--data_set=npz', '--data_dir=' + data, '--save_dir=%s' % save, '--max_epochs=1',
                   '--max_steps_per_epoch=1', '--num_samples=0']
    os.makedirs(save)
    held = savedir.Lock(str(save))
    held.acquire()
    with pytest.raises(app.UsageError, match='--save_dir=%s is in use by another run .pid %d on %s, started '
                       % (re.escape(str(save)), os.getpid(), re.escape(socket.gethostname()))):
        run_train(args)
    held.release()
    with open(save / 'lock', 'w') as f:
        json.dump(dict(pid=1, host='elsewhere', started='earlier'), f)
    with pytest.raises(app.UsageError, match='--save_dir=.* holds the lock file of a run on host elsewhere'):
        run_train(args)
    assert json.load(open(save / 'lock'))['host'] == 'elsewhere'  # refused, and left in place
    assert os.listdir(save) == ['lock']


@pytest.mark.slow
def test_unreadable_checkpoints_are_skipped(tmp_path, capsys):
    """The newest readable checkpoint serves eval and resume; a lost state file does not make
    a run start afresh over its checkpoints."""
    data = write_npz(tmp_path / 'data.npz')
    save = tmp_path / 'save'
    args = TINY + ['--data_set=npz', '--data_dir=' + data, '--save_dir=%s' % save, '--num_samples=0',
                   '--max_steps_per_epoch=2', '--save_interval=1']
    run_train(args + ['--max_epochs=2'])
    data_file = [f for f in os.listdir(save) if f.startswith('ckpt-4.data')][0]
    with open(save / data_file, 'r+b') as f:
        f.truncate(100)
    run_train(args + ['--mode=eval'])
    assert 'warning: skipping checkpoint %s, which cannot be read' % (save / 'ckpt-4') in capsys.readouterr().out
    os.remove(save / 'checkpoint')
    with pytest.raises(app.UsageError, match='already holds checkpoints .ckpt-4.: pass --load_params'):
        run_train(args + ['--max_epochs=3'])
    run_train(args + ['--max_epochs=3', '--load_params'])
    out = capsys.readouterr().out
    assert 'skipping checkpoint %s' % (save / 'ckpt-4') in out and 'restoring parameters from %s' % (save / 'ckpt-2') in out
    assert [int(i) for i, _, _ in LINE.findall(out)] == [1, 2]
    for prefix in ('ckpt-2', 'ckpt-4', 'ckpt-6'):  # the corrupt one is overwritten by the resumed run
        os.remove(save / (prefix + '.index'))
    with pytest.raises(app.UsageError, match='is a folder with no checkpoint in it'):
        run_train(args + ['--mode=eval'])



@pytest.mark.slow
def test_two_workers_train_to_equal_weights(tmp_path):
    data = write_npz(tmp_path / 'data.npz')
    cluster = {'worker': ['localhost:%d' % p for p in free_ports(2)]}
    args = TINY + ['--data_set=npz', '--data_dir=' + data, '--save_dir=%s' % (tmp_path / 'save'),
                   '--max_epochs=1', '--max_steps_per_epoch=2', '--num_samples=0']
    procs = [train_process(args, TF_CONFIG=json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': i}}))
             for i in range(2)]
    outs = [finish(p) for p in procs]
    assert 'MultiWorkerMirroredStrategy' in outs[0] and len(LINE.findall(outs[0])) == 1
    chief, other = final_params(tmp_path / 'save'), final_params(tmp_path / 'save' / 'worker1')
    step = [k for k in chief if k.startswith('adam/step')][0]
    assert chief[step] == 2  # 2 steps of a global batch of 2 workers x 4 images
    for k in chief:
        np.testing.assert_array_equal(chief[k], other[k], err_msg=k)


@pytest.mark.slow
def test_sigkills_at_random_moments_then_exact_resume(tmp_path):
    """Stopped by SIGTERM, SIGKILL, SIGINT, SIGKILL at random moments mid-run and resumed
    each time (SIGTERM and SIGINT: exit 143 and 130 after a checkpoint), a run with dropout
    ends with the weights, optimizer state and test bits/dim history of an uninterrupted one,
    bit for bit. Each update accumulates two micro-batches, so kills land inside
    accumulations too, and none is counted twice."""
    data = write_npz(tmp_path / 'data.npz', n_train=32)
    args = TINY + ['--data_set=npz', '--data_dir=' + data, '--max_epochs=3', '--save_steps=2',
                   '--save_interval=1', '--num_samples=0', '--dropout_p=0.5', '--batch_size=2',
                   '--accum_steps=2']
    straight = train_process(args + ['--save_dir=%s' % (tmp_path / 'straight')])
    save = tmp_path / 'killed'
    rng = np.random.default_rng(0)
    kills, mid_run, log = 0, 0, tmp_path / 'log.txt'
    while True:
        resume = ['--load_params'] if checkpoints.run_checkpoints(str(save)) else []
        with open(log, 'w') as out:
            proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py'), '--save_dir=%s' % save]
                                    + args + resume, env=script_env(), stdout=out, stderr=subprocess.STDOUT)
        if kills < 4:
            deadline = time.time() + 300
            while 'starting training' not in open(log).read() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0., 2.))
        if kills < 4 and proc.poll() is None:
            signum = (signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGKILL)[kills]
            proc.send_signal(signum)
            status = proc.wait()
            assert status in (0, -signal.SIGKILL, 128 + signum), open(log).read()
            text = open(log).read()
            kills += 1
            mid_run += 'starting training' in text and 'Iteration 2,' not in text
            continue
        assert proc.wait(timeout=600) == 0, open(log).read()
        break
    finish(straight)
    assert mid_run >= 3  # kills that landed after training started and before it ended
    a, b = final_params(save), final_params(tmp_path / 'straight')
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    np.testing.assert_array_equal(np.load(save / 'test_bpd_npz.npz')['test_bpd'],
                                  np.load(tmp_path / 'straight' / 'test_bpd_npz.npz')['test_bpd'])
    assert not [f for f in os.listdir(save) if 'tmp' in f or f.endswith('_temp') or f == 'lock']


@pytest.mark.slow
def test_background_model_flags_are_recorded_and_kept_on_resume(tmp_path):
    """--mutation_rate and --l2_weight go into config.json; a resume without them (and
    without model flags) keeps them; a resume that contradicts them is refused."""
    data = write_npz(tmp_path / 'data.npz')
    common = ['--data_set=npz', '--data_dir=' + data, '--save_dir=%s' % (tmp_path / 'bg'), '--noprogress',
              '--batch_size=4', '--init_batch_size=4', '--num_samples=0', '--max_steps_per_epoch=2']
    run_train(common + TINY[:3] + ['--mutation_rate=0.2', '--l2_weight=0.001', '--max_epochs=1'])
    config = json.load(open(tmp_path / 'bg' / 'config.json'))
    assert config['mutation_rate'] == 0.2 and config['l2_weight'] == 0.001 and config['nr_filters'] == 8
    run_train(common + ['--load_params', '--max_epochs=2'])
    assert json.load(open(tmp_path / 'bg' / 'config.json')) == dict(config, max_epochs=2)  # may change
    assert tf.train.latest_checkpoint(str(tmp_path / 'bg')).endswith('ckpt-4')
    with pytest.raises(app.UsageError, match='--mutation_rate=0.3, but the run .* has --mutation_rate=0.2'):
        run_train(common + ['--load_params', '--max_epochs=3', '--mutation_rate=0.3'])


@pytest.mark.parametrize('form', [pytest.param('original', marks=pytest.mark.slow), 'imagenet32'])
def test_trains_on_downsampled_imagenet_files(tmp_path, capsys, form):
    """--data_set=imagenet on the files users have: the original's tar archives (no labels),
    Imagenet32's npz batches (1,000 classes, so --class_conditional): converted into the
    cache, trained and evaluated (the test bits/dim of the epoch line)."""
    from test_imagenet import write_imagenet32, write_original
    from pixel_cnn_pp import imagenet
    data_dir = tmp_path / 'imagenet'
    if form == 'original':
        write_original(str(data_dir), n_train=8, n_test=4)
        extra = []
    else:
        write_imagenet32(str(data_dir), train_sizes=(4, 4), n_test=4)
        extra = ['--class_conditional']
    args = TINY + ['--data_set=imagenet', '--data_dir=%s' % data_dir, '--max_epochs=1', '--num_samples=0']
    run_train(args + extra + ['--save_dir=%s' % (tmp_path / 'save')])
    out = capsys.readouterr().out
    assert 'converted 8 training and 4 test images' in out
    assert len(LINE.findall(out)) == 1
    config = json.load(open(tmp_path / 'save' / 'config.json'))
    assert config['image_shape'] == [32, 32, 3] and config['num_labels'] == (1000 if extra else 0)
    if form == 'original':  # no labels: refused before the (new) cache is touched
        os.rename(data_dir / imagenet.CACHE, tmp_path / 'cache')
        with pytest.raises(app.UsageError, match='--class_conditional needs labels: the original'):
            run_train(args + ['--class_conditional', '--save_dir=%s' % (tmp_path / 'cond')])
        assert not os.path.exists(data_dir / imagenet.CACHE) and not os.path.exists(tmp_path / 'cond')


def wait_for(log_path, text, proc, timeout=300):
    deadline = time.time() + timeout
    while text not in open(log_path).read() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)


def test_sigterm_checkpoints_then_plain_load_params_resumes_the_same_run(tmp_path, capsys):
    """The issue's sequence: trained with --batch_size=8 --max_steps_per_epoch=50
    --save_steps=20 and stopped by SIGTERM mid-epoch: exit 143, the step and how to resume in
    the last line, a checkpoint of that step, no lock. A plain --load_params restores batch 8
    and the position; --batch_size=16 on resume is refused naming both values."""
    data = write_npz(tmp_path / 'data.npz', n_train=400, n_test=4, size=8)
    save = tmp_path / 'save'
    log = tmp_path / 'log.txt'
    with open(log, 'w') as out:
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py'), '--save_dir=%s' % save]
                                + TINY + ['--data_set=npz', '--data_dir=' + data, '--batch_size=8',
                                          '--max_steps_per_epoch=50', '--save_steps=20', '--max_epochs=1',
                                          '--num_samples=0'],
                                env=script_env(), stdout=out, stderr=subprocess.STDOUT)
    wait_for(log, 'starting training', proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 143, open(log).read()
    last = open(log).read().strip().splitlines()[-1]
    match = re.fullmatch(r'train.py: stopped by SIGTERM at step (\d+); checkpoint (\S+); resume with: '
                         r'python train.py --save_dir=(\S+) --load_params', last)
    assert match, last
    step = int(match.group(1))
    assert 0 < step < 50 and match.group(2) == str(save / ('ckpt-%d' % step)) == tf.train.latest_checkpoint(str(save))
    assert not os.path.exists(save / 'lock')
    reader = tf.train.load_checkpoint(str(save / ('ckpt-%d' % step)))
    assert reader.get_tensor('epoch_step/.ATTRIBUTES/VARIABLE_VALUE') == step
    with pytest.raises(app.UsageError, match=r'--batch_size=16, but the run in .* being resumed has --batch_size=8'):
        run_train(['--save_dir=%s' % save, '--load_params', '--batch_size=16'])
    capsys.readouterr()
    run_train(['--save_dir=%s' % save, '--load_params', '--max_epochs=1'])
    out = capsys.readouterr().out
    assert '1 replica(s) x 1 micro-batch(es) x 8 images = 8 images' in out
    assert 'restoring parameters from %s' % (save / ('ckpt-%d' % step)) in out
    assert tf.train.latest_checkpoint(str(save)).endswith('ckpt-50')  # 50 - step more steps, not 25


@pytest.mark.slow
def test_two_workers_stop_at_the_same_step_on_one_workers_sigterm(tmp_path):
    """MultiWorkerMirroredStrategy, SIGTERM to worker 1 only: PreemptionCheckpointHandler
    makes both save at the same step and stop (exit 143); the chief's and the worker's
    checkpoints are equal."""
    data = write_npz(tmp_path / 'data.npz', n_train=800, size=16)
    cluster = {'worker': ['localhost:%d' % p for p in free_ports(2)]}
    args = TINY + ['--data_set=npz', '--data_dir=' + data, '--save_dir=%s' % (tmp_path / 'save'),
                   '--max_epochs=1', '--num_samples=0']
    logs = [tmp_path / ('log%d.txt' % i) for i in range(2)]
    procs = []
    for i in range(2):
        with open(logs[i], 'w') as out:
            procs.append(subprocess.Popen(
                [sys.executable, os.path.join(ROOT, 'train.py')] + args, stdout=out, stderr=subprocess.STDOUT,
                env=script_env(GCE_METADATA_IP='127.0.0.1:9', TF_CONFIG=json.dumps(
                    {'cluster': cluster, 'task': {'type': 'worker', 'index': i}}))))
    wait_for(logs[1], 'starting training', procs[1])
    time.sleep(1.)
    procs[1].send_signal(signal.SIGTERM)
    statuses = [p.wait(timeout=600) for p in procs]
    assert statuses == [143, 143], [open(f).read() for f in logs]
    chief, other = final_params(tmp_path / 'save'), final_params(tmp_path / 'save' / 'worker1')
    step = [k for k in chief if k.startswith('adam/step')][0]
    assert 0 < chief[step] < 100 and chief[step] == other[step]
    for k in chief:
        np.testing.assert_array_equal(chief[k], other[k], err_msg=k)
