"""Checkpoints: exact round trips, optimizer resume, atomic saves, and loud failures on damaged files."""
import glob
import json
import math
import os
import pathlib
from collections import OrderedDict

import numpy as np
import pytest

import tinyllm
from tinyllm import checkpoint, optim
from tinyllm.checkpoint import CheckpointError, load_checkpoint, read_config, save_checkpoint


class FakeModule:
    """The two methods a checkpoint needs, over a dict of Tensors (stands in for tinyllm.nn.Module)."""

    def __init__(self, seed=0, dtype=np.float64):
        rng = np.random.default_rng(seed)
        self.params = OrderedDict(
            [("w", tinyllm.Tensor(rng.standard_normal((4, 3)).astype(dtype), requires_grad=True)),
             ("b", tinyllm.Tensor(rng.standard_normal(4).astype(dtype), requires_grad=True)),
             ("scale", tinyllm.Tensor(np.asarray(rng.standard_normal(), dtype=dtype), requires_grad=True))])
        self.steps = np.array([7, 8], dtype=np.int64)  # a non-float buffer

    def parameters(self):
        return list(self.params.values())

    def state_dict(self):
        sd = OrderedDict((k, p.data.copy()) for k, p in self.params.items())
        sd["steps"] = self.steps.copy()
        return sd

    def load_state_dict(self, sd, strict=True):
        own = set(self.state_dict())
        if strict and set(sd) != own:
            raise KeyError(f"keys differ: {sorted(set(sd) ^ own)}")
        for k, p in self.params.items():
            if k in sd:
                p.data[...] = sd[k]
        if "steps" in sd:
            self.steps[...] = sd["steps"]

    def forward(self, x):  # (N, 3) -> (N, 4)
        return (x @ self.params["w"].T + self.params["b"]) * self.params["scale"]


def make_models():
    """Model factories to test with: the fake module, and a real nn model once tinyllm.nn has layers."""
    makers = {"fake": lambda seed=0, dtype=np.float64: FakeModule(seed, dtype)}
    nn = getattr(tinyllm, "nn", None)
    if nn is not None and hasattr(nn, "Linear") and hasattr(nn, "Sequential"):
        def make_seq(seed=0, dtype=np.float64):
            tinyllm.manual_seed(seed)
            model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
            for p in model.parameters():
                p.data = p.data.astype(dtype)
            return model
        makers["nn"] = make_seq
    return makers


MODELS = make_models()


def ls_hidden(parent):
    return sorted(p for p in os.listdir(parent) if p.startswith("."))


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


# ---------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_round_trip_is_exact(tmp_path, kind, dtype):
    make = MODELS[kind]
    model, other = make(0, dtype), make(1, dtype)
    config = {"n_layer": 2, "name": "tiny", "nested": {"dropout": 0.1, "bias": True}}
    train_state = {"iter": 1200, "best_val_loss": 1.2345678901234567, "worst": math.inf,
                   "rng": tinyllm.get_rng_state()}  # 128-bit ints in PCG64's state
    save_checkpoint(tmp_path / "ck", model, config=config, train_state=train_state)
    assert sorted(os.listdir(tmp_path / "ck")) == ["config.json", "manifest.json", "model.safetensors",
                                                    "train_state.json"]
    ck = load_checkpoint(tmp_path / "ck", other)
    assert_same_state(model, other)
    assert ck.config == config and ck["config"] == config
    assert ck.train_state == train_state
    assert ck.optimizer_state is None
    assert set(ck.state_dict) == set(model.state_dict())
    assert read_config(tmp_path / "ck") == config
    assert ls_hidden(tmp_path) == []  # no temp directories left behind


def test_none_config_and_train_state_become_empty_dicts(tmp_path):
    save_checkpoint(tmp_path / "ck", FakeModule())
    ck = load_checkpoint(tmp_path / "ck")
    assert ck.config == {} and ck.train_state == {}


def _train(model, opt, sched, x, y, steps):
    for _ in range(steps):
        opt.zero_grad()
        out = model.forward(x) if hasattr(model, "params") else model(x)
        loss = ((out - y) * (out - y)).mean()
        loss.backward()
        opt.step()
        sched.step()
    return model


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("opt_name,kwargs", [("AdamW", {"lr": 0.05, "amsgrad": True}),
                                             ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
                                             ("Adagrad", {"lr": 0.1, "lr_decay": 0.01})])
def test_optimizer_resume_is_identical_to_uninterrupted(tmp_path, kind, opt_name, kwargs):
    make = MODELS[kind]
    rng = np.random.default_rng(0)
    x = tinyllm.Tensor(rng.standard_normal((8, 3)))
    y = tinyllm.Tensor(rng.standard_normal((8, 4 if kind == "fake" else 2)))

    def fresh():
        model = make(0)
        params = list(model.parameters())
        opt = getattr(optim, opt_name)([{"params": params[:1]}, {"params": params[1:], "lr": 0.01}], **kwargs)
        return model, opt, optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)

    straight = _train(*fresh(), x, y, 10)

    model, opt, sched = fresh()
    _train(model, opt, sched, x, y, 4)
    save_checkpoint(tmp_path / "ck", model, opt, train_state={"iter": 4, "sched": sched.state_dict()})

    model2, opt2, sched2 = fresh()
    ck = load_checkpoint(tmp_path / "ck", model2, opt2)
    sched2.load_state_dict(ck.train_state["sched"])
    assert opt2.param_groups[1]["lr"] == opt.param_groups[1]["lr"]
    for k, v in opt.state_dict()["state"].items():
        for key, val in v.items():
            np.testing.assert_array_equal(opt2.state_dict()["state"][k][key], val)
    _train(model2, opt2, sched2, x, y, 6)
    assert_same_state(model2, straight)


def test_float32_optimizer_state_stays_float32(tmp_path):
    model = FakeModule(dtype=np.float32)
    opt = optim.Adam(model.parameters())
    for p in model.parameters():
        p.grad = np.ones_like(p.data)
    opt.step()
    save_checkpoint(tmp_path / "ck", model, opt)
    model2 = FakeModule(1, dtype=np.float32)
    opt2 = optim.Adam(model2.parameters())
    load_checkpoint(tmp_path / "ck", model2, opt2)
    for p in model2.parameters():
        assert opt2.state[p]["exp_avg"].dtype == np.float32
        assert opt2.state[p]["step"] == 1.0


def test_optimizer_without_state_and_overwrite(tmp_path):
    model = FakeModule()
    opt = optim.SGD(model.parameters(), lr=0.1)  # no momentum: no state arrays at all
    save_checkpoint(tmp_path / "ck", model, opt)
    save_checkpoint(tmp_path / "ck", FakeModule(3), opt, config={"v": 2})  # replaces the first
    model2 = FakeModule(5)
    ck = load_checkpoint(tmp_path / "ck", model2, optim.SGD(model2.parameters(), lr=1.0))
    assert ck.config == {"v": 2}
    assert_same_state(model2, FakeModule(3))
    assert ls_hidden(tmp_path) == []


def test_load_into_mismatched_optimizer_or_without_saved_optimizer(tmp_path):
    model = FakeModule()
    save_checkpoint(tmp_path / "no_opt", model)
    with pytest.raises(CheckpointError, match="saved without an optimizer"):
        load_checkpoint(tmp_path / "no_opt", model, optim.SGD(model.parameters()))
    save_checkpoint(tmp_path / "adam", model, optim.Adam(model.parameters()))
    with pytest.raises(CheckpointError, match="holds Adam state.*SGD"):
        load_checkpoint(tmp_path / "adam", model, optim.SGD(model.parameters()))


def test_strict_is_passed_to_the_model(tmp_path):
    save_checkpoint(tmp_path / "ck", FakeModule())

    class Smaller(FakeModule):
        def state_dict(self):
            sd = super().state_dict()
            del sd["steps"]
            return sd

    with pytest.raises(KeyError):
        load_checkpoint(tmp_path / "ck", Smaller(1))
    load_checkpoint(tmp_path / "ck", Smaller(1), strict=False)


def test_config_that_is_not_json_fails_before_writing(tmp_path):
    with pytest.raises(TypeError, match="config.json.*JSON"):
        save_checkpoint(tmp_path / "ck", FakeModule(), config={"f": object()})
    assert os.listdir(tmp_path) == []


def test_refuses_to_replace_a_directory_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "precious.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        save_checkpoint(tmp_path / "runs", FakeModule())
    assert (tmp_path / "runs" / "precious.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------------------------
# atomicity
# ---------------------------------------------------------------------------------------------
def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = FakeModule(0)
    save_checkpoint(tmp_path / "ck", model, config={"v": 1})

    def half_written(arrays, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", half_written)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ck", FakeModule(1), config={"v": 2})
    monkeypatch.undo()
    assert ls_hidden(tmp_path) == []
    other = FakeModule(2)
    assert load_checkpoint(tmp_path / "ck", other).config == {"v": 1}
    assert_same_state(other, model)


def test_failed_swap_puts_previous_checkpoint_back(tmp_path, monkeypatch):
    model = FakeModule(0)
    save_checkpoint(tmp_path / "ck", model, config={"v": 1})
    real_replace = os.replace

    def replace(src, dst):
        if ".tmp-" in os.fspath(src):  # the step that would move the new checkpoint into place
            raise OSError("simulated failure")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="simulated failure"):
        save_checkpoint(tmp_path / "ck", FakeModule(1), config={"v": 2})
    monkeypatch.undo()
    assert ls_hidden(tmp_path) == []
    assert load_checkpoint(tmp_path / "ck").config == {"v": 1}


def test_crash_mid_swap_recovers_from_the_old_sibling(tmp_path):
    model = FakeModule(0)
    save_checkpoint(tmp_path / "ck", model, config={"v": 1})
    # What a crash between "move the old one aside" and "move the new one in" leaves on disk:
    os.replace(tmp_path / "ck", tmp_path / ".ck.old-1234abcd")
    (tmp_path / ".ck.tmp-xyz").mkdir()  # an unfinished temp dir (no manifest)
    other = FakeModule(1)
    with pytest.warns(RuntimeWarning, match="interrupted save"):
        ck = load_checkpoint(tmp_path / "ck", other)
    assert ck.config == {"v": 1}
    assert_same_state(other, model)
    with pytest.warns(RuntimeWarning):
        assert read_config(tmp_path / "ck") == {"v": 1}
    save_checkpoint(tmp_path / "ck", FakeModule(2), config={"v": 3})  # the next save cleans up
    assert ls_hidden(tmp_path) == []
    assert read_config(tmp_path / "ck") == {"v": 3}


# ---------------------------------------------------------------------------------------------
# damaged and missing files
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    model = FakeModule()
    save_checkpoint(tmp_path / "ck", model, optim.Adam(model.parameters()), config={"a": 1},
                    train_state={"iter": 5, "best_val_loss": 2.5})
    return tmp_path / "ck"


@pytest.mark.parametrize("fname", ["model.safetensors", "optimizer.safetensors", "config.json",
                                   "train_state.json"])
def test_truncated_file(saved, fname):
    f = saved / fname
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{fname}: size {len(data) // 2} bytes, expected {len(data)} "
                                              r"\(truncated\?\)"):
        load_checkpoint(saved, FakeModule())


@pytest.mark.parametrize("fname", ["model.safetensors", "optimizer.safetensors", "train_state.json"])
def test_corrupted_byte(saved, fname):
    f = saved / fname
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{fname}: checksum mismatch"):
        load_checkpoint(saved)


def test_corrupted_config_fails_read_config(saved):
    f = saved / "config.json"
    f.write_bytes(f.read_bytes().replace(b"1", b"2"))
    with pytest.raises(CheckpointError, match="config.json: checksum mismatch"):
        read_config(saved)


def test_unparseable_safetensors_is_a_checkpoint_error(saved):
    f = saved / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[:8] = (2 ** 40).to_bytes(8, "little")  # an absurd header length
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors: cannot read it as safetensors"):
        load_checkpoint(saved, verify=False)  # the checksum would catch it first


def test_missing_things(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nowhere"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_config(tmp_path / "nowhere")
    (saved / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match="optimizer.safetensors: missing from"):
        load_checkpoint(saved)
    (saved / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="manifest.json: missing"):
        load_checkpoint(saved)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        load_checkpoint(tmp_path / "file")


def test_corrupted_manifest(saved):
    (saved / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="manifest.json: not a valid manifest"):
        load_checkpoint(saved)


def test_optimizer_metadata_is_json_in_the_safetensors_header(saved):
    from safetensors import safe_open
    with safe_open(str(saved / "optimizer.safetensors"), framework="np") as f:
        meta = json.loads(f.metadata()["tinyllm.optimizer"])
        names = sorted(f.keys())
    assert meta["optimizer"] == "Adam"
    assert meta["param_groups"][0]["params"] == [0, 1, 2]
    assert names == []  # no step taken yet: Adam has no state
    manifest = json.loads((saved / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "optimizer.safetensors", "config.json",
                                      "train_state.json"}


def test_no_pickle_anywhere_in_tinyllm():
    root = pathlib.Path(tinyllm.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for needle in ("import pickle", "from pickle", "allow_pickle=True", "import cPickle", "import dill"):
            if needle in text:
                offenders.append(f"{path.relative_to(root.parent)}: {needle}")
    assert offenders == []
