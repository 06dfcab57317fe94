"""Every command the README and docs/ show, run as written: each in a fresh process, from a
folder that holds what the commands name (data/, params_cifar.ckpt, test.npz, the save_dirs
of the runs they continue, ...), with the package as the README's install leaves it (no
PYTHONPATH: `import pixel_cnn_pp` finds the installed package) and no network.

Only data and size flags are substituted where a command would start a long job (`here`): a
model of the tiny size, one epoch of two steps, a few images, and data the tests write in
place of downloads (CIFAR-10's python batches, the downsampled ImageNet files, a tfds set that
needs a download); the official params_cifar.ckpt is an official checkpoint of a small
config (tests/fixtures). A documented command that this module cannot run fails
test_every_documented_command_is_run, unless NOT_RUN says who runs it instead.

The default run keeps the README's first command (its install, then its training run and
its samples), the README's Python block after it, and Ctrl-C under `| tee` (the way a
terminal sends it); every other command is in the slow set."""

import fcntl
import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import (FIXTURES, OFFLINE, ROOT, project_files, uint8_images, write_cifar_layout, write_image_folder,
                      write_imagenet32, write_original, write_tfds_set)

PAGES = [p for p in project_files('.md') if p == 'README.md' or re.fullmatch(r'docs/[^/]+\.md', p)]
# Who runs a documented command this module does not.
NOT_RUN = {
    'python3 -m venv .venv': 'the README\'s install: .ci/run runs it as written (checked below)',
    'python -m pytest -q tests': 'the suite itself: .ci/run runs it after the README\'s install',
    'python -m pytest -q -m slow tests': 'the suite\'s slow set, this module\'s commands among them',
    'python -m pytest -q tests/test_official.py tests/test_load.py -k official': 'two files of the suite itself',
}
PLACEHOLDERS = {'SAVE': 'save_cpu', 'SAVE_DIR': 'save_cpu'}  # the README's results table, docs/scoring.md
TINY = {'nr_resnet': '1', 'nr_filters': '8', 'nr_logistic_mix': '2'}


# ---------------------------------------------------------------------- the commands

def documented():
    """(page, command) of every command the pages show, in their order: the lines of ```bash
    blocks (continuations joined, comments dropped, `a && b` split) and the `python ...`
    code spans of the text."""
    found = []
    for page in PAGES:
        text = open(os.path.join(ROOT, page), encoding='utf-8').read()
        for block in re.findall(r'^ *```bash\n(.*?)^ *```', text, re.S | re.M):
            for line in block.replace('\\\n', ' ').splitlines():
                line = re.sub(r'(^|\s)#.*$', '', line).strip()
                found += [(page, ' '.join(part.split())) for part in line.split('&&')
                          if re.match(r'python3? ', part.strip())]
        prose = re.sub(r'^ *```.*?^ *```', '', text, flags=re.S | re.M)
        found += [(page, ' '.join(span.split())) for span in re.findall(r'`(python3? [^`]+)`', prose)]
    return found


def is_new_run(args):
    """Whether train.py arguments start a run (not --load_params, not --mode=eval)."""
    return not any(a in ('--load_params', '--mode=eval') for a in args)


def flag(args, name):
    """The value of --name=value in args, or None."""
    return next((a.split('=', 1)[1] for a in args if a.startswith('--%s=' % name)), None)


def with_flags(args, **values):
    """args with --name=value set (replaced where given, added where not)."""
    out = [a for a in args if not any(a.startswith('--%s=' % n) for n in values)]
    return out + ['--%s=%s' % (n, v) for n, v in values.items()]


def here(command):
    """(argv after the interpreter, what it writes or continues) of a documented command as
    it runs here: the substitutions of the module docstring. `script` is the repository's
    file (the commands are run from the repository's root by a user)."""
    words = [PLACEHOLDERS.get(w, w) for w in shlex.split(command)]
    words = [re.sub(r'=(SAVE_DIR|SAVE)$', lambda m: '=' + PLACEHOLDERS[m.group(1)], w) for w in words]
    script, args = words[1], words[2:]
    name = os.path.basename(script)
    if script.startswith('benchmarks/'):
        args = bench_sizes(name, args)
    elif name == 'train.py' and is_new_run(args):
        args = with_flags(args, **TINY, max_epochs='1', max_steps_per_epoch='2', batch_size='4',
                          num_samples=flag(args, 'num_samples') or ('1' if command == first_command() else '0'))
    elif name == 'train.py' and '--load_params' in args:
        args = with_flags(args, max_epochs='2')
    elif name == 'sample.py':
        n = flag(args, 'num_samples')
        if n and int(n) > 4:
            args = with_flags(args, num_samples='4')
    if name in ('score.py', 'sample.py', 'compress.py'):
        args = [re.sub(r'tfds:svhn_cropped:test$', 'digits.npz', a) for a in args]  # a download
    return [os.path.join(ROOT, script)] + args


def bench_sizes(name, args):
    """A benchmark's own size flags, made small."""
    small = {'train_step.py': dict(TINY, warmup='1', steps='1', profile_steps='0', batch_size='2', image_size='8'),
             'sample.py': dict(sizes='small', image_size='8', batch_size='2', naive_iterations='1',
                               fast_batches='1'),
             'codec.py': dict(image_size='8', batch_size='2', num_images='2', repeats='1'),
             'input_pipeline.py': dict(num_images='6000', steps='20', epochs='1', pause='0'),
             'preemption.py': dict(sizes='small', steps='1', calls='100', repeats='1', batch_size='2'),
             'unpickle.py': dict(repeats='1')}[name]
    if name == 'codec.py' and flag(args, 'sizes'):
        small['sizes'] = 'small'
    args = with_flags(args, **small)
    return args + (['--noprofile'] if name == 'sample.py' else [])


def first_command():
    """The README's first command's run: its install's line after `pip install ... && `."""
    page, line = next((p, c) for p, c in documented() if p == 'README.md' and c.startswith('python train.py'))
    return line


def readme_install_line():
    block = re.findall(r'^```bash\n(.*?)^```', open(os.path.join(ROOT, 'README.md')).read(), re.S | re.M)
    return next(line for b in block for line in b.splitlines() if line.startswith('python3 -m venv'))


def run(argv, cwd, timeout=900, env=None):
    """argv with this interpreter (the README's venv) in a fresh process from cwd: no
    PYTHONPATH (the installed package), TensorFlow's logging as a user has it, no network."""
    environment = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'TF_CPP_MIN_LOG_LEVEL', 'TF_CONFIG')}
    environment.update(OFFLINE, **(env or {}))
    return subprocess.run([sys.executable] + argv, cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=timeout)


def ok(out, argv):
    assert out.returncode == 0, '%s\nexit %d\n%s' % (' '.join(argv), out.returncode, out.stderr[-3000:])
    assert 'Traceback' not in out.stderr, out.stderr


# ---------------------------------------------------------------------- what the commands name

def write_inputs(d):
    """The files the commands name, written here: CIFAR-10's python batches in data/ (as the
    CIFAR-10 download unpacked), mnist prepared there (as tensorflow-datasets' download leaves
    it), both forms of downsampled ImageNet, image sets (folders of image files too), the
    official checkpoint."""
    write_cifar_layout(os.path.join(d, 'data'), per_file=16)
    write_tfds_set(os.path.join(d, 'data'), 'mnist')
    write_image_folder(os.path.join(d, 'photos'), n=24, shape=(40, 48, 3), splits=(), kind='jpeg')
    write_image_folder(os.path.join(d, 'digits'), classes=['one', 'seven', 'zero'], n={'train': 6, 'test': 2})
    write_original(os.path.join(d, 'data', 'imagenet'), n_train=40, n_test=8)
    write_imagenet32(os.path.join(d, 'data', 'imagenet32'), train_sizes=(20, 20), n_test=8)
    rng = np.random.default_rng(5)
    np.savez(os.path.join(d, 'images.npz'), train_x=uint8_images((40, 8, 8, 3), 1), test_x=uint8_images((8, 8, 8, 3), 2))
    np.savez(os.path.join(d, 'test.npz'), x=uint8_images((4, 32, 32, 3), 3))
    np.savez(os.path.join(d, 'cifar10_subset.npz'), x=uint8_images((4, 32, 32, 3), 4), y=rng.integers(0, 10, 4))
    np.savez(os.path.join(d, 'digits.npz'), x=uint8_images((4, 8, 8), 5))
    np.savez(os.path.join(d, 'photos.npz'), x=uint8_images((4, 40, 40, 3), 6))
    np.savez(os.path.join(d, 'noise.npz'), x=uint8_images((4, 32, 32, 3), 7))
    np.savez(os.path.join(d, 'constant.npz'), x=np.full((4, 32, 32, 3), 90, np.uint8))
    os.makedirs(os.path.join(d, 'other'))
    from pixel_cnn_pp.images import write_png
    for k, image in enumerate(uint8_images((3, 32, 32, 3), 8)):
        write_png(os.path.join(d, 'other', '%d.png' % k), image)
    for f in glob.glob(os.path.join(FIXTURES, 'official_small', 'params_cifar.ckpt.*')):
        shutil.copy(f, d)


def runs_continued():
    """{save_dir: the first documented command that starts it} of every run a command
    continues or reads (--load_params, --mode=eval, --checkpoint, --background)."""
    starts, needed = {}, set()
    for _, command in documented():
        argv = here(command)
        name, args = os.path.basename(argv[0]), argv[1:]
        if name == 'train.py' and is_new_run(args):
            starts.setdefault(flag(args, 'save_dir') or 'save', command)
        elif name == 'train.py':
            needed.add(flag(args, 'checkpoint') or flag(args, 'save_dir') or 'save')
        needed.update(v for v in (flag(args, 'checkpoint'), flag(args, 'background')) if v)
    needed = {n for n in needed if not n.startswith('params_cifar')}
    missing = needed - set(starts)
    assert not missing, 'commands read runs no documented command starts: %s' % sorted(missing)
    return {n: starts[n] for n in sorted(needed)}


@pytest.fixture(scope='session')
def base(tmp_path_factory):
    """A folder with the inputs and a trained run of every save_dir the commands continue,
    each started by its documented command; built once for every pytest-xdist worker (the
    first builds it under a lock, the others find it)."""
    root = tmp_path_factory.getbasetemp().parent / 'documented_commands'
    root.mkdir(exist_ok=True)
    with open(root / 'lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        d = root / 'base'
        if not (d / 'done').exists():
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            write_inputs(str(d))
            for save_dir, command in runs_continued().items():
                argv = here(command)
                ok(run(argv, d), argv)
            argv = here('python compress.py --checkpoint=save --in=test.npz --out=test.pcpp')
            ok(run(argv, d), argv)  # what the decompress commands read
            (d / 'done').write_text('')
    return d


@pytest.fixture
def workspace(base, tmp_path):
    """A copy of base to run one command in."""
    d = tmp_path / 'ws'
    shutil.copytree(base, d, ignore=shutil.ignore_patterns('done'))
    return d


# ---------------------------------------------------------------------- the tests

def test_every_documented_command_is_run():
    """Each command of the pages runs here (here() knows its script) or NOT_RUN says who
    runs it; NOT_RUN names no command the pages no longer show."""
    commands = {c for _, c in documented()}
    assert len(commands) >= 50
    for command in commands - set(NOT_RUN):
        script = shlex.split(command)[1]
        assert os.path.isfile(os.path.join(ROOT, script)), command
        here(command)
    assert set(NOT_RUN) <= commands
    assert first_command().startswith('python train.py ')


def check(argv, out, ws):
    """What a command must have done beyond exiting 0 with no traceback (a benchmark: that is
    all)."""
    name, args = os.path.relpath(argv[0], ROOT), argv[1:]
    stdout = out.stdout
    if name == 'train.py' and '--help' in args:
        assert '--nr_resnet' in stdout
    elif name == 'train.py' and '--mode=eval' in args:
        assert re.search(r'^test bits_per_dim = \d+\.\d{4} \((EMA|raw) weights\)$', stdout, re.M), stdout
        assert ('raw weights' in stdout) == ('--noema' in args)
    elif name == 'train.py':
        save = ws / (flag(args, 'save_dir') or 'save')
        assert glob.glob(str(save / 'ckpt-*.index')), os.listdir(save)
        assert 'Iteration %d, time = ' % (1 if '--load_params' in args else 0) in stdout
    elif name == 'sample.py':
        out_prefix = flag(args, 'out')
        if out_prefix is None:
            ckpt = flag(args, 'checkpoint')
            folder = ckpt if os.path.isdir(ws / ckpt) else os.path.dirname(ckpt)
            out_prefix = os.path.join(folder, 'completions' if flag(args, 'complete') else 'samples')
        samples = np.load(ws / (out_prefix + '.npz'))['samples']
        assert samples.dtype == np.uint8 and samples.ndim == 4 and (ws / (out_prefix + '.png')).exists()
    elif name == 'score.py':
        assert re.search(r'^\S+: \d+ images, \d+\.\d{4} bits/dim on average', stdout, re.M), stdout
        if flag(args, 'ood'):
            assert 'auroc' in stdout
        for f in ('report', 'csv'):
            if flag(args, f):
                assert (ws / flag(args, f)).stat().st_size > 0
        if flag(args, 'heatmaps'):
            assert glob.glob(str(ws / flag(args, 'heatmaps') / '*_heatmaps_000.png'))
    elif name == 'export.py':
        check_export(ws / flag(args, 'out'), flag(args, 'format') == 'keras')
    elif name == 'compress.py' and '--decompress' in args:
        x = np.load(ws / 'test.npz')['x']
        back = flag(args, 'out')
        if back.endswith('.npz'):
            np.testing.assert_array_equal(np.load(ws / back)['x'], x)
        else:
            from pixel_cnn_pp.data import read_images
            np.testing.assert_array_equal(read_images(str(ws / back))[0], x)
    elif name == 'compress.py':
        assert (ws / flag(args, 'out')).read_bytes()[:4] == b'PC++'


CONSUMER = '''
import sys
sys.modules['pixel_cnn_pp'] = None  # only TensorFlow reads it
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
nats = m.signatures['log_prob'](images=tf.zeros([2, 32, 32, 3], tf.uint8))['nats'].numpy()
images = m.signatures['sample'](num=tf.constant(2), seed=tf.constant(1))['images'].numpy()
assert nats.shape == (2,) and (nats < 0).all() and images.shape == (2, 32, 32, 3), (nats, images.shape)
print('ok')
'''
KERAS_CONSUMER = '''
import sys
import keras, numpy as np
import pixel_cnn_pp
m = keras.models.load_model(sys.argv[1])
print(pixel_cnn_pp.log_prob(m, np.zeros([2, *m.image_shape], np.uint8)).shape)
'''


def check_export(path, keras_file):
    """The export used by a fresh process: a SavedModel by one that cannot import
    pixel_cnn_pp, a .keras file by keras.models.load_model after import pixel_cnn_pp."""
    out = run(['-I', '-c', KERAS_CONSUMER if keras_file else CONSUMER, str(path)], path.parent)
    ok(out, ['consumer of', str(path)])
    assert out.stdout.strip().splitlines()[-1] == ('(2,)' if keras_file else 'ok')


SLOW_COMMANDS = [pytest.param(c, id='%s: %s' % (p, c[:90])) for p, c in dict.fromkeys(documented())
                 if c not in NOT_RUN and c not in readme_install_line()]  # that line: the default run


@pytest.mark.slow
@pytest.mark.parametrize('command', [p.values[0] for p in SLOW_COMMANDS], ids=[p.id for p in SLOW_COMMANDS])
def test_documented_command(command, workspace):
    argv = here(command)
    name, args = os.path.relpath(argv[0], ROOT), argv[1:]
    if name == 'train.py' and is_new_run(args) and '--help' not in args:
        shutil.rmtree(workspace / (flag(args, 'save_dir') or 'save'), ignore_errors=True)  # it starts the run
    if name == 'compress.py' and '--decompress' not in args:
        (workspace / flag(args, 'out')).unlink(missing_ok=True)  # base's copy of what it writes
    out = run(argv, workspace)
    ok(out, argv)
    check(argv, out, workspace)


# ---------------------------------------------------------------------- the default run's part

def test_the_readmes_first_command_then_its_python(tmp_path):
    """The README's install line: the install .ci/run runs (pip install -r requirements.txt -e .),
    then its training run and samples as written (tiny and short), then the README's Python
    block from another folder, on the model that run wrote."""
    line = readme_install_line()
    install, _, job = line.partition(' && python ')
    assert install == 'python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt -e .'
    ci = open(os.path.join(ROOT, '.ci', 'run')).read()
    assert "readme_command 'python3 -m venv'" in ci and "readme_command 'python -m pytest'" in ci
    write_cifar_layout(str(tmp_path / 'data'), per_file=16)
    for command in ['python ' + c for c in job.split(' && python ')]:
        argv = here(command)
        out = run(argv, tmp_path)
        ok(out, argv)
        check(argv, out, tmp_path)
    assert (tmp_path / 'save_cpu' / 'cifar_sample0.png').exists() and (tmp_path / 'save_cpu' / 'samples.png').exists()
    readme = open(os.path.join(ROOT, 'README.md')).read()
    snippet = re.search(r'^## Python\n.*?^```python\n(.*?)^```', readme, re.S | re.M).group(1)
    (tmp_path / 'elsewhere').mkdir()
    checks = '''
assert nats.shape == (4,) and np.all(nats < 0) and np.all(np.isfinite(bpd))
np.testing.assert_allclose(pixels.sum(axis=(1, 2)), nats, rtol=1e-4)
assert samples.shape == (16, 32, 32, 3) and samples.dtype == np.uint8
assert np.array_equal(done[:, :16], images[:, :16]) and pixel_cnn_pp.__file__.startswith(sys.argv[1])
print('ok')
'''
    script = 'import sys\n' + snippet.replace("'save_cpu'", repr(str(tmp_path / 'save_cpu'))) + checks
    out = run(['-c', script, ROOT], tmp_path / 'elsewhere')
    ok(out, ['the README\'s Python'])
    assert out.stdout.strip().splitlines()[-1] == 'ok'


def test_ctrl_c_under_tee_keeps_the_run(tmp_path):
    """`python train.py ... 2>&1 | tee train.log`, then Ctrl-C as a terminal sends it: SIGINT
    to the whole foreground process group, both processes with SIGINT at its default. tee
    dies of it; train.py's output then meets a closed pipe, which must cost nothing: the
    save_dir stays, with a checkpoint of the step reached mid-epoch, exit status 130, and
    --load_params goes on to the end of the epoch."""
    write_cifar_layout(str(tmp_path / 'data'), per_file=400)  # 2,000 images: 500 steps of 4
    steps = 100  # of them an epoch, its progress printed every 10
    argv = here(first_command())
    argv = [argv[0]] + with_flags(argv[1:], num_samples='0', max_steps_per_epoch=str(steps), save_minutes='0')

    def foreground(group):
        def start():  # what a shell does for a foreground job, and the signal at its default
            os.setpgid(0, group or 0)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        return start
    environment = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'TF_CPP_MIN_LOG_LEVEL')}
    train = subprocess.Popen([sys.executable] + argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=environment, preexec_fn=foreground(0))
    tee = subprocess.Popen(['tee', 'train.log'], cwd=tmp_path, stdin=train.stdout, stdout=subprocess.DEVNULL,
                           preexec_fn=foreground(train.pid))
    train.stdout.close()
    try:
        began, log = time.time(), tmp_path / 'train.log'
        while not (log.exists() and ' %d/%d steps' % (steps // 10, steps) in log.read_text()):  # mid-epoch
            assert time.time() - began < 300 and train.poll() is None
            time.sleep(0.1)
        os.killpg(train.pid, signal.SIGINT)
        assert train.wait(120) == 130
        assert tee.wait(30) == -signal.SIGINT
    finally:
        for p in (train, tee):
            if p.poll() is None:
                p.kill()
    saved = [int(p.rsplit('-', 1)[1][:-6]) for p in glob.glob(str(tmp_path / 'save_cpu' / 'ckpt-*.index'))]
    assert len(saved) == 1 and steps // 10 <= saved[0] < steps, saved
    log = (tmp_path / 'train.log').read_text()
    assert 'Traceback' not in log and 'Iteration 0' not in log
    out = run([argv[0], '--data_dir=data', '--save_dir=save_cpu', '--load_params', '--noprogress'], tmp_path)
    ok(out, ['resume'])
    assert 'restoring parameters from save_cpu/ckpt-%d' % saved[0] in out.stdout
    assert re.search(r'^Iteration 0, time = ', out.stdout, re.M)
    assert glob.glob(str(tmp_path / 'save_cpu' / ('ckpt-%d.index' % steps)))


@pytest.mark.slow
def test_the_fit_example_runs_as_written(tmp_path):
    """docs/api.md's Keras example, as written, in a fresh process with the installed
    package: it trains, evaluates, samples, and leaves model.keras that loads."""
    text = open(os.path.join(ROOT, 'docs', 'api.md')).read()
    example = re.search(r'^## Train with Keras.*?^```python\n(.*?)^```', text, re.S | re.M).group(1)
    out = run(['-c', example + "\nprint('samples', samples.shape, samples.dtype)"], tmp_path)
    ok(out, ['docs/api.md\'s fit example'])
    assert re.search(r"\{'bits_per_dim': \d+\.\d+, 'loss': \d+\.\d+\}", out.stdout), out.stdout
    assert 'samples (4, 16, 16, 3) uint8' in out.stdout
    check = run(['-c', 'import keras, pixel_cnn_pp; print(keras.models.load_model("model.keras").image_shape)'],
                tmp_path)
    ok(check, ['load model.keras'])
    assert check.stdout.strip().endswith('(16, 16, 3)')
