"""``tinyllm attention``: the maps it draws are the run's attention probabilities (checked panel by panel
against ``GPT(ids, output_attentions=True)``, itself checked against Hugging Face in
tests/models/test_attentions.py), the panels --layer/--head pick, the token tick labels with visible
whitespace, the crop of a long text, and one-line errors for bad input."""
import os

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from tinyllm import data, plot, runs, train  # noqa: E402
from tinyllm.cli import main  # noqa: E402
from tinyllm.train_config import TrainConfig  # noqa: E402

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 20
TINY = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, batch_size=4, eval_interval=5, eval_iters=1,
            log_interval=5, max_iters=5, progress=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attn")
    d, run, lstm = str(tmp / "data"), str(tmp / "run"), str(tmp / "lstm")
    data.prepare_text(TEXT, d, "char")
    train.train(d, run, TrainConfig.from_flat(**TINY), log=lambda *a: None)
    train.train(d, lstm, TrainConfig.from_flat(model="lstm", hidden_size=8, num_layers=1, block_size=8, batch_size=2,
                                               eval_interval=1, eval_iters=1, max_iters=1, progress=False),
                log=lambda *a: None)
    return {"tmp": tmp, "run": run, "lstm": lstm}


@pytest.fixture
def drawn(monkeypatch):
    """The figures ``attention`` draws, kept open for inspection."""
    figures = []
    draw = plot.attention_figure

    def keep(*args, **kwargs):
        figures.append(draw(*args, **kwargs))
        return figures[-1]
    monkeypatch.setattr(plot, "attention_figure", keep)
    return figures


def _panels(fig):
    """(title, x tick labels, y tick labels, the drawn array) of each map in the figure."""
    out = []
    for ax in fig.axes:
        if ax.images and ax.get_title():
            image = ax.images[0].get_array()
            out.append((ax.get_title(), [t.get_text() for t in ax.get_xticklabels()],
                        [t.get_text() for t in ax.get_yticklabels()], image))
    return out


def _expected(run, text):
    model, tok, _ = runs.load_run(run)
    ids = tok.encode(text)[-model.config.block_size:]
    _, _, att = model(np.array([ids]), output_attentions=True)
    return [a.numpy()[0] for a in att]


def _run(argv, capsys):
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_grid_of_every_layer_and_head(world, drawn, capsys, tmp_path):
    import matplotlib.image
    text = "All:\nSpeak, spea"
    png = str(tmp_path / "a.png")
    code, out, err = _run(["attention", "--run", world["run"], "--text", text, "--out", png], capsys)
    assert code == 0 and err == "" and out.strip() == f"wrote {png}"
    pixels = matplotlib.image.imread(png)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 300 and pixels.std() > 0.05  # a picture, not blank
    want = _expected(world["run"], text)
    panels = _panels(drawn[0])
    assert [p[0] for p in panels] == ["layer 0, head 0", "layer 0, head 1", "layer 1, head 0", "layer 1, head 1"]
    labels = ["A", "l", "l", ":", "\u23ce", "S", "p", "e", "a", "k", ",", "\u2423", "s", "p", "e", "a"]
    for k, (title, xs, ys, image) in enumerate(panels):
        assert xs == labels and ys == labels
        assert np.array_equal(image.mask, np.triu(np.ones((16, 16), bool), 1))  # the future is blank
        np.testing.assert_array_equal(image.data[~image.mask], want[k // 2][k % 2][~image.mask])
    # one character more than the block: the first is cropped, with a note
    assert "last 16" not in out
    code, out, _ = _run(["attention", "--run", world["run"], "--text", text + "k", "--out", png], capsys)
    assert code == 0 and out.splitlines()[0] == "note: the text is 17 tokens; drawing its last 16 (the run's block size)"
    assert _panels(drawn[1])[0][1] == labels[1:] + ["k"]


@pytest.mark.parametrize("flags, titles", [
    (["--layer", "1"], ["layer 1, head 0", "layer 1, head 1"]),
    (["--head", "1"], ["layer 0, head 1", "layer 1, head 1"]),
    (["--layer", "1", "--head", "0"], ["layer 1, head 0"]),
])
def test_layer_and_head_pick_the_panels(world, drawn, capsys, tmp_path, flags, titles):
    text = "Speak, speak."
    code, _, _ = _run(["attention", "--run", world["run"], "--text", text, "--out", str(tmp_path / "a.png")] + flags,
                      capsys)
    assert code == 0
    want = _expected(world["run"], text)
    panels = _panels(drawn[0])
    assert [p[0] for p in panels] == titles
    for title, _, _, image in panels:
        l, h = int(title.split()[1][:-1]), int(title.split()[3])
        np.testing.assert_array_equal(image.data[~image.mask], want[l][h][~image.mask])


def test_default_out_is_in_the_run(world, capsys):
    code, out, _ = _run(["attention", "--run", world["run"], "--text", "All:", "--layer", "0", "--head", "0"], capsys)
    path = os.path.join(world["run"], "attention.png")
    assert code == 0 and out.strip() == f"wrote {path}" and os.path.getsize(path) > 1000
    os.remove(path)


def test_bad_input_is_one_line(world, capsys, tmp_path, monkeypatch):
    png = str(tmp_path / "a.png")
    run = ["attention", "--run", world["run"], "--out", png]
    cases = [
        (run + ["--text", "caf\u00e9"], 2, "--text: CharTokenizer.encode: character"),
        (run + ["--text", ""], 2, "--text must not be empty"),
        (run + ["--text", "All", "--layer", "2"], 2, "--layer must be in 0..1 (the run has 2 layers), got 2"),
        (run + ["--text", "All", "--head", "-1"], 2, "--head must be in 0..1 (the run has 2 heads), got -1"),
        (run + ["--text", "All", "--checkpoint", "middle"], 2, "argument --checkpoint: invalid choice"),
        (["attention", "--run", world["lstm"], "--text", "All", "--out", png], 2,
         f"attention maps need a GPT run; {world['lstm']} is a 'lstm' run"),
        (["attention", "--run", str(tmp_path / "nowhere"), "--text", "All", "--out", png], 2, "has no 'best' checkpoint"),
        (["attention", "--run", world["run"], "--out", png], 2, "the following arguments are required: --text"),
    ]
    for argv, want_code, message in cases:
        code, out, err = _run(argv, capsys)
        assert code == want_code and len(err.splitlines()) == 1 and message in err, (argv, code, err)
        assert err.startswith("tinyllm attention: error: ") and not os.path.exists(png)
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # the plot extra is missing
    code, out, err = _run(run + ["--text", "All"], capsys)
    assert code == 1 and err.strip() == ("tinyllm attention: error: plotting needs matplotlib: "
                                         "pip install 'tinyllm[plot]'") and not os.path.exists(png)


def test_token_label():
    assert plot.token_label(" a\n\tb") == "\u2423a\u23ce\u21e5b"
    assert plot.token_label("abcdefghijk") == "abcdefg\u2026"
