"""Draw the autograd graph: ``draw_graph(loss, params=dict(model.named_parameters()))``.

The picture is the graph ``backward()`` walks (torchviz's ``make_dot``, micrograd's ``draw_dot``): one
grey node per op, named after its Function; one blue node per leaf, named from ``params`` with its
shape; a green node per output; and, with ``show_saved=True``, an orange node per array the ops kept
for their backward. Edges run from each input to the op that consumed it (the data's direction;
backward follows them the other way). The result is a ``graphviz.Digraph``: Jupyter shows it inline,
``.render(format="png")`` writes an image when Graphviz's ``dot`` program is installed, and
``.source`` is the DOT text without it.
"""
from .autograd import Tensor

COLORS = dict(op="lightgrey", leaf="lightblue", output="darkolivegreen1", saved="orange")
# What the engine keeps on every context; everything else on a ctx is what its forward saved.
ENGINE_ATTRS = frozenset({"parents", "needs_input_grad", "retained", "last_backward"})


def draw_graph(tensor, params=None, show_saved=False, show_attrs=False, rankdir="TB"):
    """The autograd graph behind ``tensor`` (or a tuple/list of tensors) as a ``graphviz.Digraph``.

    ``params``: a dict, or pairs, name -> Tensor (``model.named_parameters()``) to name the leaves;
    unnamed leaves show only their shape. ``show_saved``: add each array an op saved for its backward
    (shape, dtype; the edge names the attribute), one node per array, so an array that two ops share
    is drawn once. ``show_attrs``: list each op's other saved values (dims, flags) inside its node.
    ``rankdir``: Graphviz's layout direction, "TB" (inputs at the top), "BT", "LR" or "RL".

    Draw before ``backward()`` (or after ``backward(retain_graph=True)``): backward frees the graph.
    The Digraph holds only text, so it keeps no tensor, array or model alive.
    """
    try:
        import graphviz
    except ImportError:
        raise ImportError("draw_graph() needs the graphviz package: pip install 'tinyllm[viz]' "
                          "(rendering images also needs Graphviz's dot program)") from None
    if rankdir not in ("TB", "BT", "LR", "RL"):
        raise ValueError(f"draw_graph(): rankdir must be 'TB', 'BT', 'LR' or 'RL', got {rankdir!r}")
    outputs = _outputs(tensor)
    names, param_arrays = _names(params)
    dot = graphviz.Digraph(
        graph_attr=dict(rankdir=rankdir, ranksep="0.25", nodesep="0.2", fontname="Helvetica"),
        node_attr=dict(shape="box", style="filled,rounded", fontname="Helvetica", fontsize="11",
                       height="0.3", margin="0.12,0.04"),
        edge_attr=dict(arrowsize="0.6", color="gray30", fontname="Helvetica"))

    # One walk from all outputs (an output may feed another, as logits feed the loss), explicit stack
    # as backward's: a 20,000-op chain must not recurse.
    seen, stack = set(), []
    leaf_outputs = {id(t) for t in outputs if t._ctx is None}
    for i, out in enumerate(outputs):
        title = "output" if len(outputs) == 1 else f"output {i}"
        if out._ctx is not None:
            dot.node(str(id(out)), _label(title, out.data), fillcolor=COLORS["output"])
            dot.edge(str(id(out._ctx)), str(id(out)))
        stack.append(out if out._ctx is None else out._ctx)
    saved_drawn = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Tensor):  # a leaf
            color = COLORS["output"] if id(node) in leaf_outputs else COLORS["leaf"]
            dot.node(str(id(node)), _label(names.get(id(node)), node.data, node.grad), fillcolor=color)
            continue
        if node.parents is None:
            raise RuntimeError("draw_graph(): this graph was freed by backward(); draw it before backward, "
                               "or call backward(retain_graph=True)")
        saved, attrs = _saved(node) if show_saved or show_attrs else ((), ())
        lines = [type(node).__name__] + ([f"{k}={v}" for k, v in attrs] if show_attrs else [])
        dot.node(str(id(node)), "\\n".join(_escape(s) for s in lines), fillcolor=COLORS["op"])
        if show_saved:
            for attr, array in saved:
                key = f"saved{id(array)}"
                if id(array) not in saved_drawn:
                    saved_drawn.add(id(array))
                    dot.node(key, _label(param_arrays.get(id(array)), array, dtype=True),
                             fillcolor=COLORS["saved"], shape="box", style="filled")
                dot.edge(key, str(id(node)), label=_escape(attr), dir="none", style="dashed",
                         color="darkorange", fontsize="9", fontcolor="darkorange3")
        for parent in node.parents:
            if parent is not None:  # None: an input that needs no gradient, not part of the graph
                dot.edge(str(id(parent)), str(id(node)))
        stack.extend(p for p in reversed(node.parents) if p is not None and id(p) not in seen)  # first input first
    return dot


def _outputs(tensor):
    """The tensors to draw from: one tensor, or a (nested) tuple/list of them; None entries (a model's
    missing loss) are skipped."""
    found, pending = [], [tensor]
    while pending:
        t = pending.pop()
        if isinstance(t, (tuple, list)):
            pending.extend(reversed(t))
        elif isinstance(t, Tensor):
            if not t.requires_grad:
                raise ValueError(f"draw_graph(): a tensor of shape {tuple(t.shape)} does not require grad, so it "
                                 f"has no graph (made under no_grad, or from leaves without requires_grad=True)")
            if all(t is not f for f in found):
                found.append(t)
        elif t is not None:
            raise TypeError(f"draw_graph(): expected a Tensor or a tuple/list of Tensors, got {type(t).__name__}")
    if not found:
        raise ValueError("draw_graph(): no tensor to draw")
    return found


def _names(params):
    """id(tensor) -> its name from ``params`` (a tensor given under several names shows them all), and
    id(array) -> "name.data" for the tensors' own arrays, which ops may keep for their backward."""
    named = {}
    for name, t in dict(params or {}).items():
        if not isinstance(t, Tensor):
            raise TypeError(f"draw_graph(): params[{name!r}] is a {type(t).__name__}, not a Tensor")
        named.setdefault(id(t), (t, []))[1].append(name)
    names = {key: " = ".join(n) for key, (t, n) in named.items()}
    arrays = {id(t.data): " = ".join(f"{x}.data" for x in n) for t, n in named.values()}
    return names, arrays


def _saved(ctx):
    """What ``ctx``'s forward kept: (attribute, array) pairs (arrays inside a tuple/list are named
    ``attr[i]``), and the other values as (attribute, short text)."""
    saved, attrs = [], []
    for attr, value in vars(ctx).items():
        if attr in ENGINE_ATTRS or attr.startswith("_"):
            continue
        if _is_array(value):
            saved.append((attr, value))
        elif isinstance(value, (tuple, list)) and any(_is_array(v) for v in value):
            saved.extend((f"{attr}[{i}]", v) for i, v in enumerate(value) if _is_array(v))
        elif value is not None:
            text = repr(value)
            attrs.append((attr, text if len(text) <= 32 else text[:29] + "..."))
    return saved, attrs


def _is_array(value):
    """A NumPy or CuPy array, or a NumPy scalar (what NumPy returns for a 0-d result)."""
    return (not isinstance(value, Tensor) and hasattr(value, "shape") and hasattr(value, "dtype")
            and hasattr(value, "ndim"))


def _label(title, array, grad=None, dtype=False):
    """A node's text: its title (if any), the shape, and for one-element tensors the value (and the
    gradient once backward has run), as micrograd's nodes show them."""
    shape = "(" + ", ".join(str(n) for n in array.shape) + ("," if array.ndim == 1 else "") + ")"
    lines = [] if title is None else [title]
    lines.append(f"{shape} {array.dtype}" if dtype else shape)
    if array.size == 1 and not dtype:
        lines.append(f"data {float(array.reshape(()).item()):.4g}")
        if grad is not None:
            lines.append(f"grad {float(grad.reshape(()).item()):.4g}")
    return "\\n".join(_escape(s) for s in lines)


def _escape(text):
    """Text safe inside a DOT label: backslashes are Graphviz escapes (we join lines with \\n)."""
    return str(text).replace("\\", "\\\\")
