"""The guided tour in examples/ runs as a user runs it (a subprocess from the repository root), and says
what it should: gradients equal finite differences, attention rows are probabilities, statistics logged
per layer, and each writes its picture."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name, *args, out):
    p = subprocess.run([sys.executable, os.path.join("examples", name), "--out", str(out), *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_autograd_graph(tmp_path):
    pytest.importorskip("graphviz")
    out = run_example("autograd_graph.py", out=tmp_path)
    assert "dx1 = -1.5000, dx2 = +0.5000, dw1 = +1.0000, dw2 = +0.0000, db = +0.5000" in out  # micrograd's
    assert "gradcheck: the engine's gradients equal finite differences" in out
    assert "drawn ops: Add, Add, Mul, Mul, Tanh" in out
    dot = (tmp_path / "autograd_graph.dot").read_text()
    assert all(f"{name}\\n()" in dot for name in ("x1", "x2", "w1", "w2", "b"))
    if "(install graphviz's dot" not in out:
        assert (tmp_path / "autograd_graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attention_map(tmp_path):
    pytest.importorskip("matplotlib")
    out = run_example("attention_map.py", "--quick", out=tmp_path)
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert len(rows) == 2 * 4  # every head of the 2-layer, 4-head quick run
    layer, head = re.search(r"layer (\d+), head (\d+) puts", out).groups()
    drawn = next(float(r[2]) for r in rows if (r[0], r[1]) == (layer, head))
    assert drawn == max(float(r[2]) for r in rows)  # the head drawn is the most previous-token-minded
    assert (tmp_path / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_stats(tmp_path):
    pytest.importorskip("matplotlib")
    out = run_example("training_stats.py", "--iters", "40", out=tmp_path)
    assert "rows with statistics; the last, at iteration 40" in out
    table = {line.split()[0]: line.split()[1:] for line in out.splitlines() if re.match(r"^(wte|wpe|h\.\d|ln_f) ", line)}
    assert list(table) == ["wte", "wpe", "h.0", "h.1", "h.2", "ln_f"]
    assert all(float(cells[0]) > 0 and float(cells[1]) > 0 for cells in table.values())  # grad norm, update ratio
    assert table["h.0"][4] != "-" and table["wte"][4] == "-"  # GELU saturation only where there is a GELU
    assert (tmp_path / "training_stats.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
