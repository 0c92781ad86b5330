""".ci/deprecated_jax.sh: every deprecated JAX/grain API it names is caught in a temporary file,
current spellings are not, and the repository itself is clean."""

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / ".ci" / "deprecated_jax.sh"
# Built from parts so that this file itself holds none of the patterns.
X = "jax.experimental"
DEPRECATED = [
    f"from {X}.shard_map import shard_map",
    f"y = {X}.shard_map.shard_map(f, mesh, in_specs, out_specs)",
    f"from {X} import mesh_utils, shard_map",
    f"from {X}.pjit import pjit",
    f"from {X} import pjit",
    "jax." + "core.Tracer",
    "from jax import " + "co" + "re",
    "x = jax.device_put_" + "replicated(x, devices)",
    "x = jax.device_put_" + "sharded(xs, devices)",
    "import grain." + "python as grain",
    "from grain import " + "pyth" + "on",
    "with " + "mesh:",
    "  with self." + "mesh:",
    "with " + "mesh, other:",
]
CURRENT = [
    "y = jax.shard_map(f, mesh=mesh, in_specs=P(), out_specs=P())",
    "with jax.set_mesh(mesh):",
    "from jax.experimental import mesh_utils, multihost_utils",
    "import grain",
    "x = jax.device_put(x, sharding)",
    "mesh = jax.make_mesh((2,), ('data',))",
    "from jax.extend import core as ext_core",
]


def run_check(path):
  return subprocess.run(["bash", str(CHECK), str(path)], capture_output=True, text=True)


@pytest.mark.parametrize("line", DEPRECATED)
def test_catches_each_deprecated_api(tmp_path, line):
  (tmp_path / "mod.py").write_text(f"import jax\n{line}\n")
  out = run_check(tmp_path)
  assert out.returncode == 1 and f"mod.py:2:{line}" in out.stdout


def test_current_apis_pass(tmp_path):
  (tmp_path / "mod.py").write_text("\n".join(CURRENT) + "\n")
  (tmp_path / "notes.md").write_text(DEPRECATED[0] + "\n")   # only Python files are checked
  out = run_check(tmp_path)
  assert out.returncode == 0, out.stdout


def test_repository_is_clean():
  out = subprocess.run(["bash", str(CHECK)], capture_output=True, text=True, cwd=REPO)
  assert out.returncode == 0, out.stdout
