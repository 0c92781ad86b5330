"""Fixtures for tnx.train tests: a tiny smoke config (`smoke`), a local stand-in for gs://
storage (`gcs`), a TensorBoard event reader (`tb_scalars`), and a guard that fails any test
leaving a URL-named folder ('gs:', 'memory:', ...) in the current directory."""

import contextlib
import os
from unittest import mock

import pytest
from etils.epath import testing as epath_testing

from tnx.train import config

EPATH_FUNCTIONS = ("copy", "exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "open",
                   "remove", "rename", "replace", "rmtree", "stat", "walk")


# One layer, one device, short windows, no evaluation (one compilation less per run).
LIGHT = ("--config.model.n_layers=1", "--config.mesh.data=1", "--config.train.eval_batches=0",
         "--config.data.seq_len=32", "--config.data.max_bytes=60000")


def smoke_cfg(workdir, *extra, light=True):
  """lm:smoke into `workdir` (LIGHT unless light=False; `extra` overrides it), without
  progress bar or plot unless asked."""
  cfg, _ = config.parse_args(["--config=lm:smoke", f"--config.workdir={workdir}",
                              "--config.train.progress=false", "--config.train.plot=false",
                              *(LIGHT if light else ()), *extra])
  return cfg


@contextlib.contextmanager
def gcs_standin(root):
  """Serves gs://BUCKET/... from the local folder root/BUCKET/...: every etils.epath call
  (used by tnx.train, orbax and grain) and orbax's TensorStore paths are redirected, so code
  that handles the URL through epath works unchanged, while code that treated it as a local
  path would write './gs:/BUCKET/...' under the current directory instead."""
  root = os.path.abspath(root)

  def local(p):
    s = os.fspath(p)
    return os.path.join(root, s[len("gs://"):]) if s.startswith("gs://") else p

  def redirect(name):
    def fn(original, path, *args, **kwargs):
      if name in ("rename", "replace", "copy"):
        args = (local(args[0]), *args[1:])
      return original(local(path), *args, **kwargs)
    return fn

  from orbax.checkpoint._src.path import gcs_utils
  from orbax.checkpoint._src.serialization import tensorstore_utils as ts_utils
  normalize = ts_utils._normalize_path
  with epath_testing.mock_epath(**{n: redirect(n) for n in EPATH_FUNCTIONS}), \
      mock.patch.object(ts_utils, "_normalize_path", lambda p: local(normalize(p))), \
      mock.patch.object(gcs_utils, "is_hierarchical_namespace_enabled", lambda p: False):
    yield


def tensorboard_scalars(tb_dir) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} read back from the TensorBoard event files in `tb_dir`."""
  import struct

  from tensorboardX.proto import event_pb2
  out: dict[str, list[tuple[int, float]]] = {}
  for f in sorted(os.listdir(tb_dir)):
    data = open(os.path.join(tb_dir, f), "rb").read()
    pos = 0
    while pos + 12 <= len(data):
      (n,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
      pos += 12 + n + 4
      for v in event.summary.value:
        out.setdefault(v.tag, []).append((event.step, v.simple_value))
  return out


def url_named_entries(directory) -> set[str]:
  """Entries of `directory` named like a URL scheme ('gs:', 'memory:'): what a URL handled as
  a local path ('gs://b/x' -> './gs:/b/x') leaves behind."""
  return {n for n in os.listdir(directory) if n.endswith(":")}


@pytest.fixture(autouse=True)
def no_url_named_folders():
  cwd = os.getcwd()
  before = url_named_entries(cwd)
  yield
  new = url_named_entries(cwd) - before
  if new:
    pytest.fail(f"the test created {sorted(new)} in {cwd}: a URL was used as a local path")


@pytest.fixture
def gcs(tmp_path, monkeypatch):
  """(root of the gs:// stand-in, an empty current directory)."""
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  with gcs_standin(tmp_path / "gcs"):
    yield tmp_path / "gcs", cwd


@pytest.fixture
def smoke():
  return smoke_cfg


@pytest.fixture
def tb_scalars():
  return tensorboard_scalars


@pytest.fixture
def light():
  """The command-line flags `smoke` adds to lm:smoke (for tests that build argv themselves)."""
  return list(LIGHT)
