"""Checkpointer: retention policies, confirmed-good bookkeeping, resume-step choice, and one
clear error (naming the step and the previous good one) for corrupted, truncated or garbled
checkpoints, with nothing on disk modified."""

import hashlib
import json
import random

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tnx.train.checkpoint import Checkpointer, CheckpointError, Retention


def state_at(step):
  rng = np.random.default_rng(step)
  return {"w": jnp.asarray(rng.normal(size=(64, 64)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(64,)), jnp.float32),
          "step": jnp.asarray(step, jnp.int32)}


TARGET = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_at(0))


def save_all(ck, steps, good=(), metrics=None):
  for s in steps:
    ck.save(s, state_at(s), None, {"step": s}, metrics=metrics(s) if metrics else None)
    ck.wait()
    if s in good:
      ck.mark_good(s)


def test_keep_last_protects_the_newest_good_checkpoint(tmp_path):
  ck = Checkpointer(tmp_path, retention=Retention(keep_last=1))
  save_all(ck, [2, 4, 6, 8], good=[2])
  assert ck.all_steps() == [2, 8]            # 2 is the only good one: kept until a newer one
  ck.mark_good(8)
  save_all(ck, [10])
  assert ck.all_steps() == [8, 10]
  ck.close()


def test_keep_every_and_keep_best(tmp_path):
  ck = Checkpointer(tmp_path / "every", retention=Retention(keep_last=1, keep_every=4))
  save_all(ck, [2, 4, 6, 8, 10])
  assert ck.all_steps() == [4, 8, 10]
  ck.close()
  losses = {2: 3.0, 4: 1.0, 6: 2.0, 8: 4.0, 10: 5.0}
  ck = Checkpointer(tmp_path / "best", retention=Retention(keep_last=1, keep_best=2))
  save_all(ck, [2, 4, 6, 8, 10], metrics=lambda s: {"eval/loss": losses[s]})
  assert ck.all_steps() == [4, 6, 10]        # the two lowest losses and the newest
  ck.close()
  ck = Checkpointer(tmp_path / "max", retention=Retention(keep_last=1, keep_best=1,
                                                          best_metric="eval/accuracy",
                                                          best_mode="max"))
  save_all(ck, [2, 4, 6], metrics=lambda s: {"eval/accuracy": {2: 0.5, 4: 0.9, 6: 0.1}[s]})
  assert ck.all_steps() == [4, 6]
  ck.close()


def test_status_persists_and_chooses_the_resume_step(tmp_path):
  ck = Checkpointer(tmp_path, retention=Retention(keep_last=5))
  save_all(ck, [2, 4, 6], good=[2, 4])
  ck.mark_bad(6, "step 7 was not finite")
  ck.close()
  ck = Checkpointer(tmp_path, retention=Retention(keep_last=5))
  assert ck.describe() == "2 (good), 4 (good), 6 (bad: step 7 was not finite)"
  assert json.loads((tmp_path / "status.json").read_text()) == {
      "good": [2, 4], "bad": {"6": "step 7 was not finite"}}
  assert ck.resume_step() == 4 and ck.resume_step(2) == 2 and ck.newest_good() == 4
  with pytest.raises(CheckpointError, match="step 6 .* is marked bad"):
    ck.resume_step(6)
  with pytest.raises(CheckpointError, match="step 5 not found .* 2 \\(good\\)"):
    ck.resume_step(5)
  state, meta = ck.restore(4, TARGET)
  np.testing.assert_array_equal(state["w"], state_at(4)["w"])
  assert meta["step"] == 4 and sorted(meta["checksums"]) == ["b", "step", "w"]
  assert ck.delete_after(2) == [4, 6] and ck.all_steps() == [2]
  ck.close()
  with pytest.raises(CheckpointError, match="no checkpoint found"):
    Checkpointer(tmp_path / "empty").resume_step()


def digest(path):
  h = hashlib.sha256()
  for p in sorted(path.rglob("*")):
    if p.is_file():
      h.update(str(p.relative_to(path)).encode() + p.read_bytes())
  return h.hexdigest()


def largest_file(step_dir):
  return max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
             key=lambda p: p.stat().st_size)


def corrupt_random_bytes(f):
  data = bytearray(f.read_bytes())
  rng = random.Random(0)
  for i in range(len(data) // 2, len(data) // 2 + 4):
    data[i] = rng.randrange(256)
  f.write_bytes(bytes(data))           # same size


@pytest.mark.parametrize("damage,message", [
    (lambda d: corrupt_random_bytes(largest_file(d)),
     r"step 6 .* is corrupted: 1 array\(s\) \(w\) differ from the checksums"),
    (lambda d: largest_file(d).write_bytes(largest_file(d).read_bytes()[:100]),
     r"step 6 .* is truncated or corrupted: its arrays could not be read"),
    (lambda d: (d / "state" / "_METADATA").write_text("{garbage"),
     r"step 6 .* is truncated or corrupted: its arrays could not be read \(JSONDecodeError"),
    (lambda d: (d / "meta" / "metadata").write_bytes(b"\xff\xfe garbage"),
     r"step 6 .* is unreadable: its metadata \(meta/\) could not be read"),
])
def test_damaged_checkpoint_gives_one_clear_error(tmp_path, capfd, damage, message):
  ck = Checkpointer(tmp_path, retention=Retention(keep_last=5))
  save_all(ck, [2, 4, 6], good=[2, 4])
  damage(tmp_path / "6")
  before = digest(tmp_path)
  with pytest.raises(CheckpointError, match=message) as e:
    ck.restore(6, TARGET)
  assert "Nothing was modified. The previous good checkpoint is step 4: resume from it with " \
         "--resume --resume_step=4." in str(e.value)
  assert "\n" not in str(e.value) and len(str(e.value)) < 800
  assert digest(tmp_path) == before
  state, _ = ck.restore(4, TARGET)       # the earlier checkpoint still restores
  np.testing.assert_array_equal(state["b"], state_at(4)["b"])
  ck.close()
  err = capfd.readouterr().err
  assert "Event loop is closed" not in err and "Traceback" not in err
