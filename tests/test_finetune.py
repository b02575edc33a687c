"""Fine-tuning: ``train --init-from`` a tinyllm run or a Hugging Face GPT-2 directory, fully or with
LoRA adapters (only they train, only they are checkpointed, resume is exact), ``merge``, and
``prepare text --tokenizer-from`` so that the vocabularies agree."""
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from tinyllm.cli import main
from tinyllm.runs import load_run, read_metrics

S1 = "to be or not to be, that is the question: whether 'tis nobler in the mind to suffer. "
S2 = "now is the winter of our discontent made glorious summer by this sun of york. "
A = (S1 * 3 + S2) * 40  # A's characters cover B's, so B can be prepared with A's tokenizer
B = S2 * 120
SMALL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
         "--eval-iters", "2", "--no-progress"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny base run on text A, and text B prepared with A's tokenizer."""
    root = tmp_path_factory.mktemp("ft")
    (root / "a.txt").write_text(A)
    (root / "b.txt").write_text(B)
    assert main(["prepare", "text", str(root / "a.txt"), "--out", str(root / "data_a")]) == 0
    assert main(["prepare", "text", str(root / "b.txt"), "--out", str(root / "data_b"),
                 "--tokenizer-from", str(root / "data_a")]) == 0
    run = str(root / "base")
    assert main(["train", "--data", str(root / "data_a"), "--out", run, "--max-iters", "20",
                 "--eval-interval", "10"] + SMALL) == 0
    return root, run


def _eval_loss(run, capsys, data=None):
    args = ["eval", "--run", run] + (["--data", data] if data else [])
    assert main(args) == 0
    return float(capsys.readouterr().out.split()[2])


def test_tokenizer_from_keeps_the_ids(base):
    root, _ = base
    meta_a = json.load(open(root / "data_a" / "meta.json"))
    meta_b = json.load(open(root / "data_b" / "meta.json"))
    assert meta_a["vocab_size"] == meta_b["vocab_size"]
    assert open(root / "data_a" / "tokenizer.json").read() == open(root / "data_b" / "tokenizer.json").read()


def test_full_finetune_starts_from_the_base_and_keeps_its_shape(base, capsys):
    root, run = base
    out = str(root / "full")
    # the model flags are overridden by the pretrained shape (here they would not fit its weights)
    assert main(["train", "--data", str(root / "data_b"), "--out", out, "--init-from", run, "--max-iters", "10",
                 "--eval-interval", "10", "--n-layer", "3", "--block-size", "16", "--batch-size", "4",
                 "--eval-iters", "2", "--no-progress"]) == 0
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["train"]["model"]["n_layer"] == 1 and cfg["train"]["init_from"] == run
    first = read_metrics(out)[0]
    capsys.readouterr()
    base_on_b = _eval_loss(run, capsys, str(root / "data_b"))
    tuned_on_b = _eval_loss(out, capsys)
    assert tuned_on_b < base_on_b  # fine-tuning on B helps on B
    assert first["iter"] == 0 and first["val_loss"] is not None


def test_lora_trains_and_saves_only_adapters_resumes_exactly_and_merges(base, capsys):
    root, run = base
    common = ["--data", str(root / "data_b"), "--init-from", run, "--lora-rank", "2", "--lora-alpha", "4",
              "--block-size", "16", "--batch-size", "4", "--eval-iters", "2", "--eval-interval", "4", "--no-progress",
              "--lr-decay-iters", "8"]  # one schedule for both lengths: by default each would decay over its own
    lora = str(root / "lora")
    assert main(["train", "--out", lora, "--max-iters", "8"] + common) == 0
    saved = load_file(os.path.join(lora, "best", "model.safetensors"))
    assert saved and all(k.endswith((".lora_A", ".lora_B")) for k in saved)
    opt_keys = load_file(os.path.join(lora, "last", "optimizer.safetensors")).keys()
    assert len([k for k in opt_keys if k.endswith("exp_avg")]) == len(saved)  # Adam state for the adapters only
    model, _, _ = load_run(lora)
    base_model, _, _ = load_run(run)
    np.testing.assert_array_equal(model.h[0].attn.c_attn.base.weight.data, base_model.h[0].attn.c_attn.weight.data)
    # resume: 4 iterations, then 4 more, gives the uninterrupted run's losses bit for bit
    half = str(root / "lora_half")
    assert main(["train", "--out", half, "--max-iters", "4"] + common) == 0
    assert main(["train", "--out", half, "--max-iters", "8", "--resume"] + common) == 0
    whole = [(r["iter"], r["train_loss"], r["val_loss"]) for r in read_metrics(lora)]
    resumed = [(r["iter"], r["train_loss"], r["val_loss"]) for r in read_metrics(half)]
    assert resumed == whole
    capsys.readouterr()
    lora_loss = _eval_loss(lora, capsys)
    merged = str(root / "merged")
    assert main(["merge", "--run", lora, "--out", merged]) == 0
    capsys.readouterr()
    assert _eval_loss(merged, capsys) == pytest.approx(lora_loss, abs=2e-4)
    assert main(["sample", "--run", merged, "--prompt", "now", "--max-new-tokens", "20"]) == 0
    assert main(["merge", "--run", run, "--out", str(root / "nope")]) == 2  # not a LoRA run


def test_vocabulary_mismatch_says_how_to_fix_it(base, tmp_path, capsys):
    root, run = base
    (tmp_path / "c.txt").write_text("completely different symbols: 0123456789 XYZ!? " * 100)
    assert main(["prepare", "text", str(tmp_path / "c.txt"), "--out", str(tmp_path / "data_c")]) == 0
    assert main(["train", "--data", str(tmp_path / "data_c"), "--out", str(tmp_path / "x"), "--init-from", run,
                 "--max-iters", "2", "--no-progress"]) == 2
    assert "--tokenizer-from" in capsys.readouterr().err


def test_lora_from_a_hugging_face_directory(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    (tmp_path / "a.txt").write_text(A)
    assert main(["prepare", "text", str(tmp_path / "a.txt"), "--out", str(tmp_path / "data")]) == 0
    vocab = json.load(open(tmp_path / "data" / "meta.json"))["vocab_size"]
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16,
                                                              n_layer=1, n_head=2))
    hf.save_pretrained(tmp_path / "hf")
    out = str(tmp_path / "hf_lora")
    assert main(["train", "--data", str(tmp_path / "data"), "--out", out, "--init-from", str(tmp_path / "hf"),
                 "--lora-rank", "2", "--max-iters", "4", "--eval-interval", "4", "--block-size", "16",
                 "--batch-size", "2", "--eval-iters", "1", "--no-progress"]) == 0
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["model"]["block_size"] == 32 and cfg["train"]["model"]["activation"] == "gelu_tanh" and cfg["train"]["model"]["bias"]
    only_attn = str(tmp_path / "hf_lora_attn")
    assert main(["train", "--data", str(tmp_path / "data"), "--out", only_attn, "--init-from", str(tmp_path / "hf"),
                 "--lora-rank", "2", "--lora-targets", "c_attn", "--max-iters", "2", "--eval-interval", "2",
                 "--block-size", "16", "--batch-size", "2", "--eval-iters", "1", "--no-progress"]) == 0
    keys = load_file(os.path.join(only_attn, "best", "model.safetensors")).keys()
    assert keys and all(".attn.c_attn.lora_" in k for k in keys)
    assert main(["sample", "--run", out, "--prompt", "to", "--max-new-tokens", "10"]) == 0
