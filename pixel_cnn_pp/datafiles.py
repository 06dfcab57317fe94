"""What reading a user's data file may do: raise DataError (bad data, named by the
argument or file, quoting the error behind it in one line: first_line), never run code
from the file (load_pickle), and tell an .npz from other files before NumPy reads it
(is_npz, read_npz)."""

import pickle
import zipfile
import zlib

import numpy as np

from pixel_cnn_pp.config import ConfigError


class DataError(ConfigError):
    """A data set, file or argument that cannot be used: a config.ConfigError whose message
    holds the settings it names as placeholders (`DataError('{data_dir} is not an .npz',
    data_dir=path)`: str() says data_dir=path, cli.py --data_dir=path), or a plain sentence
    naming a file."""

    def within(self, prefix):
        """The same error with `prefix` before its message (what a caller adds: the SPEC
        it was reading)."""
        positional = tuple(f for f in self.fields if f not in self.values)
        return DataError(prefix + self.template, *positional, **self.values)


class _Refused(pickle.UnpicklingError):
    """What the restricted unpickler says of anything it does not build."""


def _reconstruct_functions():
    """NumPy's own array reconstructors, as its pickles name them (taken from NumPy, so
    that both numpy.core and numpy._core spellings map to the installed functions)."""
    reconstruct = np.zeros(1).__reduce__()[0]  # multiarray._reconstruct
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # numeric._frombuffer (protocol 5)
    scalar = np.int64(0).__reduce__()[0]  # multiarray.scalar (a NumPy number)
    table = {}
    for core in ('numpy.core', 'numpy._core'):
        table[(core + '.multiarray', '_reconstruct')] = reconstruct
        table[(core + '.multiarray', 'scalar')] = scalar
        table[(core + '.numeric', '_frombuffer')] = frombuffer
    return table


def _dtype(*args):
    """numpy.dtype, refusing object dtypes (an object array's items would be arbitrary
    pickled objects)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise _Refused('an object array')
    return dtype


def _latin1(text, encoding='utf-8'):
    """_codecs.encode as Python 3 pickles of bytes use it (protocol 2): latin-1 only."""
    if encoding not in ('latin1', 'latin-1'):
        raise _Refused('_codecs.encode with encoding %r' % encoding)
    return text.encode(encoding)


# Everything the CIFAR-10 python batches and Imagenet32's pickle batches need: dicts, lists,
# str/bytes and numbers are built by the pickle machine itself; these build the arrays.
ALLOWED = {**_reconstruct_functions(), ('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): _dtype,
           ('_codecs', 'encode'): _latin1}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        raise _Refused('it asks for %s.%s' % (module, name))


def load_pickle(path):
    """The contents of the pickle file at path (a latin-1 pickle, as the CIFAR-10 and
    Imagenet32 batches are), read so that it cannot run code: only dicts, lists, tuples,
    str/bytes, numbers, and NumPy arrays and numbers of non-object dtypes are built;
    anything else is a DataError naming the file."""
    try:
        with open(path, 'rb') as f:
            return _Unpickler(f, encoding='latin1').load()
    except _Refused as e:
        raise DataError('%s: refused to unpickle it (%s): a data file may hold only arrays, '
                        'lists, dicts, strings and numbers, and a pickle that asks for more can '
                        'run code' % (path, e)) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as e:  # truncated or not a pickle
        raise DataError('%s: not a readable pickle (%s: %s)' % (path, type(e).__name__, e)) from None


def first_line(e):
    """An exception's first line, or its type if it says nothing: what a one-line error
    quotes of the error behind it."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def read_npz(path, keys=None, what=None, **values):
    """{key: array} of the .npz at path (only `keys`, when given), read with pickles refused
    (an object array is not readable); if it is not an .npz or not readable (truncated, not
    a zip), a DataError naming it as `what` (a placeholder of values: '{data_dir}'), else
    by its path."""
    what = what or path
    if not is_npz(path):
        raise DataError('%s is not an .npz file' % what, **values)
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files if keys is None or k in keys}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:  # truncated, object arrays
        raise DataError('%s is not a readable .npz (%s: %s)' % (what, type(e).__name__, first_line(e)),
                        **values) from None


NPZ_MAGIC = (b'PK\x03\x04', b'PK\x05\x06')  # a zip archive's first bytes (an empty one's)


def is_npz(path):
    """Whether the file at path starts as an .npz (a zip archive) does, as NumPy tells one:
    np.load takes any other file for an .npy or a pickle."""
    with open(path, 'rb') as f:
        return f.read(4) in NPZ_MAGIC
