"""draw_graph: the drawn nodes and edges are exactly the graph backward walks, read back from the DOT
text (not from draw_graph's own bookkeeping), for a small expression and a one-block GPT."""
import collections
import gc
import re
import shutil
import sys
import weakref

import numpy as np
import pytest

import tinyllm as tl
from tinyllm.autograd import Function
from tinyllm.models.gpt import GPT, GPTConfig

from tinyllm.viz import draw_graph

try:
    import graphviz  # noqa: F401  (the viz extra)
except ImportError:
    graphviz = None

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")

NODE = re.compile(r"^\t(\S+) \[(.*)\]$")
EDGE = re.compile(r"^\t(\S+) -> (\S+)(?: \[(.*)\])?$")
ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


@pytest.fixture(autouse=True)
def _needs_graphviz(request):
    """Every test draws with graphviz, except the one about its absence."""
    if graphviz is None and request.node.name != "test_import_error_names_the_extra":
        pytest.skip("the graphviz package is not installed (pip install 'tinyllm[viz]')")


def parse(dot):
    """(nodes: id -> attributes, edges: Counter of (tail, head), saved edges: list of (tail, head,
    attributes)) from the DOT text. Labels come back with real newlines."""
    nodes, edges, saved = {}, collections.Counter(), []
    for line in dot.source.splitlines():
        edge = EDGE.match(line)
        node = NODE.match(line)
        if edge:
            attrs = _attrs(edge.group(3) or "")
            if attrs.get("dir") == "none":  # a saved array's link to its op
                saved.append((edge.group(1), edge.group(2), attrs))
            else:
                edges[edge.group(1), edge.group(2)] += 1
        elif node and node.group(1) not in ("graph", "node", "edge"):
            assert node.group(1) not in nodes, f"node {node.group(1)} declared twice"
            nodes[node.group(1)] = _attrs(node.group(2))
    return nodes, edges, saved


def _attrs(text):
    out = {}
    for key, value in ATTR.findall(text):
        if value.startswith('"'):
            value = value[1:-1].replace('\\"', '"')
        out[key] = value.replace("\\n", "\n")
    return out


def ident(obj):
    return str(id(obj))


def leaves():
    a = tl.tensor([1.0, -2.0, 0.5], requires_grad=True)
    b = tl.tensor([0.3, 0.7, -1.2], requires_grad=True)
    return a, b


# -- a small expression -------------------------------------------------------------------------

def test_small_expression_nodes_and_edges():
    a, b = leaves()
    out = (a * b + a).tanh().sum()
    nodes, edges, saved = parse(draw_graph(out, params={"a": a, "b": b}))
    sum_ = out._ctx
    tanh = sum_.parents[0]
    add = tanh.parents[0]
    mul = add.parents[0]
    assert add.parents[1] is a and mul.parents == (a, b)
    expected_nodes = {
        ident(out): ("output\n()\ndata " + f"{out.item():.4g}", "darkolivegreen1"),
        ident(sum_): ("Sum", "lightgrey"), ident(tanh): ("Tanh", "lightgrey"),
        ident(add): ("Add", "lightgrey"), ident(mul): ("Mul", "lightgrey"),
        ident(a): ("a\n(3,)", "lightblue"), ident(b): ("b\n(3,)", "lightblue"),
    }
    assert {k: (v["label"], v["fillcolor"]) for k, v in nodes.items()} == expected_nodes
    # as backward walks them: each consumer back to its inputs; the diamond on a is two edges into one leaf
    assert edges == collections.Counter({
        (ident(sum_), ident(out)): 1, (ident(tanh), ident(sum_)): 1, (ident(add), ident(tanh)): 1,
        (ident(mul), ident(add)): 1, (ident(a), ident(add)): 1, (ident(a), ident(mul)): 1,
        (ident(b), ident(mul)): 1})
    assert saved == []


def test_an_input_used_twice_gives_two_edges_and_a_constant_none():
    a, _ = leaves()
    c = tl.tensor([2.0, 3.0, 4.0])  # needs no grad: not part of the graph
    out = a * a * c
    nodes, edges, _ = parse(draw_graph(out))
    square = out._ctx.parents[0]
    assert out._ctx.parents[1] is None
    assert edges == collections.Counter({(ident(a), ident(square)): 2, (ident(square), ident(out._ctx)): 1,
                                         (ident(out._ctx), ident(out)): 1})
    assert nodes[ident(a)]["label"] == "(3,)"  # unnamed leaf: its shape
    assert len(nodes) == 4


def test_saved_arrays_for_matmul_are_its_inputs():
    x = tl.randn(2, 3, requires_grad=True)
    w = tl.randn(3, 4, requires_grad=True)
    y = x @ w
    nodes, _, saved = parse(draw_graph(y, params={"w": w}, show_saved=True))
    links = {(attrs["label"], nodes[tail]["label"]) for tail, head, attrs in saved if head == ident(y._ctx)}
    assert type(y._ctx).__name__ == "MatMul"
    assert links == {("a", "(2, 3) float32"), ("b", "w.data\n(3, 4) float32")}
    assert all(nodes[tail]["fillcolor"] == "orange" for tail, _, _ in saved)


def test_an_array_two_ops_keep_is_drawn_once():
    x = tl.randn(4, requires_grad=True)
    t = x.tanh()  # Tanh keeps its output ...
    y = t * t  # ... and Mul keeps both inputs: the same array, three times
    nodes, _, saved = parse(draw_graph(y, show_saved=True))
    assert y._ctx.a is t._ctx.out and y._ctx.b is t._ctx.out
    assert len(saved) == 3 and len({tail for tail, _, _ in saved}) == 1
    assert sorted(a["label"] for _, _, a in saved) == ["a", "b", "out"]


def test_show_attrs_lists_the_other_saved_values():
    x = tl.randn(2, 3, requires_grad=True)
    y = x.sum(dim=1, keepdim=True)
    nodes, _, _ = parse(draw_graph(y, show_attrs=True))
    assert nodes[ident(y._ctx)]["label"].splitlines() == ["Sum", "shape=(2, 3)", "axes=(1,)", "keepdim=True"]
    assert parse(draw_graph(y))[0][ident(y._ctx)]["label"] == "Sum"


def test_scalar_leaves_show_data_and_grad_after_backward():
    a = tl.tensor(2.0, requires_grad=True)
    b = tl.tensor(-3.0, requires_grad=True)
    out = a * b + a
    out.backward(retain_graph=True)
    nodes, _, _ = parse(draw_graph(out, params={"a": a, "b": b}))
    assert nodes[ident(a)]["label"] == "a\n()\ndata 2\ngrad -2"  # d/da (ab + a) = b + 1
    assert nodes[ident(b)]["label"] == "b\n()\ndata -3\ngrad 2"
    assert nodes[ident(out)]["label"] == "output\n()\ndata -4"


def test_saved_zero_dim_values_are_drawn():
    a = tl.tensor(0.5, requires_grad=True)
    out = a.tanh()  # NumPy returns a scalar for a 0-d tanh: still what the op keeps
    nodes, _, saved = parse(draw_graph(out, show_saved=True))
    assert [(attrs["label"], nodes[tail]["label"]) for tail, _, attrs in saved] == [("out", "() float32")]


def test_several_outputs_one_walk():
    a, b = leaves()
    h = a * b
    out = h.sum()
    nodes, edges, _ = parse(draw_graph((h, [out, None])))
    assert nodes[ident(h)]["label"] == "output 0\n(3,)" and nodes[ident(out)]["label"].startswith("output 1\n()")
    assert edges[ident(h._ctx), ident(h)] == 1 and edges[ident(h._ctx), ident(out._ctx)] == 1
    assert [n["label"] for n in nodes.values()].count("Mul") == 1
    # a leaf given as an output is itself the output node
    nodes, edges, _ = parse(draw_graph(a, params={"a": a}))
    assert nodes == {ident(a): {"label": "a\n(3,)", "fillcolor": "darkolivegreen1"}} and not edges


def test_a_20000_op_chain():
    x = tl.ones(3, requires_grad=True)
    y = x
    for _ in range(20000):
        y = y * 1.0
    nodes, edges, _ = parse(draw_graph(y))
    assert len(nodes) == 20000 + 2 and sum(edges.values()) == 20000 + 1
    assert sum(n["label"] == "Mul" for n in nodes.values()) == 20000


# -- refusals -----------------------------------------------------------------------------------

def test_refuses_a_tensor_without_graph():
    with pytest.raises(ValueError, match="does not require grad"):
        draw_graph(tl.ones(3))
    with tl.no_grad():
        y = leaves()[0] * 2
    with pytest.raises(ValueError, match="does not require grad"):
        draw_graph(y)
    with pytest.raises(TypeError, match="expected a Tensor"):
        draw_graph(np.ones(3))
    with pytest.raises(ValueError, match="rankdir"):
        draw_graph(leaves()[0], rankdir="up")
    with pytest.raises(TypeError, match=r"params\['w'\] is a ndarray"):
        draw_graph(leaves()[0], params={"w": np.ones(3)})


def test_refuses_a_graph_freed_by_backward():
    a, b = leaves()
    out = (a * b).sum()
    out.backward()
    with pytest.raises(RuntimeError, match="freed by backward"):
        draw_graph(out)
    y = a * b  # a new graph on top of a freed one is refused too, wherever the freed part starts
    z = y.sum()
    z.backward()
    with pytest.raises(RuntimeError, match="freed by backward"):
        draw_graph(y * 2)


def test_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(ImportError, match=r"pip install 'tinyllm\[viz\]'"):
        draw_graph(leaves()[0])


# -- a one-block GPT ----------------------------------------------------------------------------

def tiny_gpt():
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    ids = np.random.default_rng(0).integers(0, 11, (2, 5))
    return model, ids


def record_contexts(monkeypatch):
    """Every context Function.apply links during the forward, in creation order."""
    created = []
    apply = Function.apply.__func__

    def recording_apply(cls, *inputs, **options):
        out = apply(cls, *inputs, **options)
        if out._ctx is not None:
            created.append(out._ctx)
        return out

    monkeypatch.setattr(Function, "apply", classmethod(recording_apply))
    return created


def test_one_block_gpt_every_op_once_every_parameter_named(monkeypatch):
    model, ids = tiny_gpt()
    created = record_contexts(monkeypatch)
    _, loss = model(ids, targets=ids)
    monkeypatch.undo()
    nodes, edges, _ = parse(draw_graph(loss, params=dict(model.named_parameters())))

    ops = {k: v for k, v in nodes.items() if v["fillcolor"] == "lightgrey"}
    assert set(ops) == {ident(c) for c in created} and len(ops) == len(created)  # each op once, all of them
    assert sorted(v["label"] for v in ops.values()) == sorted(type(c).__name__ for c in created)
    assert {"Embedding", "LayerNorm", "Linear", "ScaledDotProductAttention", "GELU", "CrossEntropy",
            "Add"} <= {v["label"] for v in ops.values()}
    assert collections.Counter(v["label"] for v in ops.values())["Linear"] == 5  # c_attn, c_proj, c_fc, c_proj, lm_head

    params = dict(model.named_parameters())
    leaves_drawn = {k: v["label"] for k, v in nodes.items() if v["fillcolor"] == "lightblue"}
    assert leaves_drawn == {ident(p): f"{name}\n{p.shape}" for name, p in params.items()}
    assert "lm_head.weight" not in params and ident(model.lm_head.weight) in leaves_drawn  # tied: named wte.weight

    expected = collections.Counter((ident(p), ident(c)) for c in created for p in c.parents if p is not None)
    expected[ident(loss._ctx), ident(loss)] += 1
    assert edges == expected
    print(f"one-block GPT: {len(nodes)} nodes ({len(ops)} ops, {len(leaves_drawn)} leaves), "
          f"{sum(edges.values())} edges")


def test_one_block_gpt_logits_and_loss(monkeypatch):
    model, ids = tiny_gpt()
    logits, loss = model(ids, targets=ids)
    nodes, edges, _ = parse(draw_graph((logits, loss), params=model.named_parameters()))
    assert nodes[ident(logits)]["label"] == "output 0\n(2, 5, 11)"
    assert edges[ident(logits._ctx), ident(logits)] == 1
    assert sum(1 for n in nodes.values() if n["fillcolor"] == "darkolivegreen1") == 2
    # without targets the model returns (logits, None): None is skipped
    nodes2, _, _ = parse(draw_graph(model(ids)))
    assert sum(n["label"] == "CrossEntropy" for n in nodes2.values()) == 0
    assert sum(n["fillcolor"] == "lightgrey" for n in nodes2.values()) == \
        sum(n["fillcolor"] == "lightgrey" for n in nodes.values()) - 2  # no Reshape, no CrossEntropy


def test_one_block_gpt_saved_arrays():
    model, ids = tiny_gpt()
    _, loss = model(ids, targets=ids)
    nodes, _, saved = parse(draw_graph(loss, params=dict(model.named_parameters()), show_saved=True))
    c_fc = model.h[0].mlp.c_fc.weight
    linear = [k for k, v in nodes.items() if v["label"] == "Linear"]
    kept = {(a["label"], nodes[t]["label"]) for t, h, a in saved if h in linear}
    assert ("weight", "h.0.mlp.c_fc.weight.data\n(32, 8) float32") in kept and c_fc.shape == (32, 8)
    assert ("weight", "wte.weight.data\n(11, 8) float32") in kept  # the tied lm_head keeps the embedding
    assert ("x", "(2, 5, 32) float32") in kept  # c_proj keeps the GELU output


def snapshot(contexts):
    """Every context's attributes: which objects, and the bytes of its arrays."""
    return [{k: (id(v), v.tobytes() if isinstance(v, np.ndarray) else None) for k, v in vars(c).items()}
            for c in contexts]


def test_drawing_keeps_nothing_alive_and_changes_nothing(monkeypatch):
    model, ids = tiny_gpt()
    created = record_contexts(monkeypatch)
    _, loss = model(ids, targets=ids)
    monkeypatch.undo()
    before = snapshot(created)
    dot = draw_graph(loss, params=dict(model.named_parameters()), show_saved=True, show_attrs=True)
    assert snapshot(created) == before
    del created
    loss.backward()
    grads = {n: p.grad.copy() for n, p in model.named_parameters()}
    model.zero_grad()
    model(ids, targets=ids)[1].backward()  # the same forward, not drawn
    assert all(np.array_equal(p.grad, grads[n]) for n, p in model.named_parameters())

    refs = [weakref.ref(model), weakref.ref(model.wte.weight), weakref.ref(loss)]
    del model, loss
    gc.collect()
    assert all(r() is None for r in refs)
    assert "Linear" in dot.source  # the drawing lives on as text


# -- rendering ----------------------------------------------------------------------------------

@needs_dot
def test_renders_png_and_svg(tmp_path):
    a, b = leaves()
    dot = draw_graph((a * b + a).tanh().sum(), params={"a": a, "b": b}, show_saved=True)
    png = dot.render(outfile=tmp_path / "graph.png")
    data = open(png, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 100 < width < 2000 and 100 < height < 2000
    svg = dot._repr_mimebundle_()["image/svg+xml"]  # what Jupyter shows inline
    assert "<svg" in svg and ">Tanh<" in svg and ">a.data<" in svg
