"""One path abstraction for everything tnx.train reads or writes: `etils.epath`, the same
library orbax uses, so a workdir may be a local folder or a cloud URL (`gs://`, `s3://`, ...).

  path("runs/lm")             -> local absolute path (relative to the current directory)
  path("file:///tmp/runs/lm") -> the local path /tmp/runs/lm
  path("gs://bucket/runs/lm") -> a GCS path (needs gcsfs, e.g. the [tpu] extra)

A URL is never turned into a local folder such as `./gs:/bucket/...`. Cloud objects cannot be
appended to, so writers that grow a file (metrics.jsonl, TensorBoard events) rewrite it whole
(see `tnx.train.metrics`); small files are written with `write_text` in one call.
"""

from __future__ import annotations

import io
import os
import urllib.parse
from typing import Any

from etils import epath

PathLike = str | os.PathLike


def is_url(p: PathLike) -> bool:
  """True for 'scheme://...' strings (file:// included)."""
  return isinstance(p, str) and "://" in p


def path(p: PathLike) -> epath.Path:
  """The epath.Path for a local path, a file:// URL or a cloud URL (ValueError if the URL
  scheme is not one etils.epath supports)."""
  text = os.fspath(p)
  if not text:
    raise ValueError("path must be a non-empty string, got ''")
  if text.startswith("file://"):
    local = urllib.parse.unquote(urllib.parse.urlparse(text).path)
    return epath.Path(os.path.abspath(local))
  if is_url(text):
    try:
      return epath.Path(text)
    except KeyError:
      scheme = text.split("://", 1)[0]
      raise ValueError(f"path {text!r}: the URL scheme {scheme}:// is not supported; expected a "
                       "local path, file://, gs://, s3://, az:// or hf://") from None
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def is_local(p: PathLike) -> bool:
  """True when `p` resolves to the local file system."""
  return not is_url(str(path(p)))


def write_text(p: PathLike, text: str) -> None:
  """Writes `text` to `p` in one call (parents created)."""
  target = path(p)
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_text(text)


def save_figure(fig: Any, p: PathLike, **kwargs: Any) -> None:
  """Saves a matplotlib figure to `p` (PNG by default) through epath."""
  buf = io.BytesIO()
  fig.savefig(buf, format=kwargs.pop("format", "png"), **kwargs)
  target = path(p)
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_bytes(buf.getvalue())


def copy_into(files: list[PathLike], directory: PathLike) -> list[epath.Path]:
  """Copies `files` into `directory` (overwriting); returns the new paths. Used by examples'
  `--docs` flag to publish figures and tables."""
  dst_dir = path(directory)
  dst_dir.mkdir(parents=True, exist_ok=True)
  out = []
  for f in files:
    src = path(f)
    dst = dst_dir / src.name
    dst.write_bytes(src.read_bytes())
    out.append(dst)
  return out


class _RewriteOnFlush:
  """A binary file object for a cloud URL: bytes are kept in memory and the whole object is
  rewritten on every flush (cloud objects cannot be appended to)."""

  def __init__(self, target: epath.Path):
    self.target, self.buffer = target, io.BytesIO()

  def write(self, data: bytes) -> int:
    return self.buffer.write(data)

  def flush(self) -> None:
    self.target.write_bytes(self.buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _TensorBoardFactory:
  """tensorboardX writer factory that sends event files through epath."""

  def open(self, p: str) -> _RewriteOnFlush:
    return _RewriteOnFlush(path(p))

  def directory_check(self, p: str) -> None:
    path(p).mkdir(parents=True, exist_ok=True)


def register_tensorboard_scheme(p: PathLike) -> None:
  """Routes tensorboardX event files under the URL `p` (any scheme epath handles) through
  epath; a no-op for local paths (idempotent)."""
  text = os.fspath(p)
  if is_url(text):
    from tensorboardX import record_writer
    record_writer.register_writer_factory(text.split("://", 1)[0], _TensorBoardFactory())
