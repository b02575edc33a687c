"""A GPT as an ONNX graph with a key/value cache, built node by node with ``onnx.helper`` from the weights
(no torch, no tracing), for ONNX Runtime and any other runtime of opset 17.

The graph (B = batch, T = seq, P = past_seq, S = P + T; every layer i of n_layer):

    inputs   input_ids       (B, T) int64       the new tokens
             position_ids    (B, T) int64       their positions, P .. P + T - 1 for a plain sequence
             past_key_i      (B, n_head, P, hs) float32   P = 0 (a zero-length axis) for the prompt
             past_value_i    (B, n_head, P, hs) float32
    outputs  logits          (B, T, vocab) float32
             present_key_i   (B, n_head, S, hs)  past_key_i with the new keys appended: the next
             present_value_i (B, n_head, S, hs)  step's past_key_i, so a decode step costs O(S)

Positions are an input, not computed in the graph: the caller knows them, and a graph that computed its
own broke ONNX Runtime's extended optimisation level when that was tried. The causal mask is built from
the shapes (query i sits at position P + i and sees key j iff j <= P + i), so the prompt, a one-token
decode step and a several-token chunk on a cache all run the same graph. The file's metadata holds the
model's GPTConfig as JSON (key ``config``).

Example, prefill then greedy decoding with onnxruntime::

    import numpy as np, onnxruntime as ort
    from tinyllm.export.onnx import to_onnx

    to_onnx(model, tokenizer, "out")
    sess = ort.InferenceSession("out/model.onnx", providers=["CPUExecutionProvider"])
    c = model.config
    hs = c.n_embd // c.n_head
    ids = np.array([tokenizer.encode("Hello")], dtype=np.int64)           # (1, T)
    past = {f"past_{kv}_{i}": np.zeros((1, c.n_head, 0, hs), np.float32)  # empty cache for the prompt
            for i in range(c.n_layer) for kv in ("key", "value")}
    out, n = ids, 0                                                        # n = positions already cached
    for _ in range(20):
        pos = np.arange(n, n + ids.shape[1], dtype=np.int64)[None]
        logits, *present = sess.run(None, {"input_ids": ids, "position_ids": pos, **past})
        past = {name.replace("present", "past"): a
                for name, a in zip([o.name for o in sess.get_outputs()[1:]], present)}
        n += ids.shape[1]
        ids = logits[:, -1].argmax(-1)[:, None].astype(np.int64)          # (1, 1): the next token
        out = np.concatenate([out, ids], axis=1)
    print(tokenizer.decode(out[0].tolist()))

Positions stop at block_size, as in tinyllm: the position table has block_size rows.
"""
import json
import math
import os

import numpy as np

from .common import check_gpt, host_array, new_output_dir, position_table
from .hf import write_hf_tokenizer

__all__ = ["to_onnx", "onnx_model", "OPSET"]

# Opset 17 is the first with LayerNormalization and has everything else used here; GELU is written as
# its formula (Erf or Tanh), which ONNX Runtime fuses into one kernel at its extended level anyway, so
# opset 20's Gelu would only shut out runtimes without opset 20 (ONNX Runtime before 1.17).
OPSET = 17
IR_VERSION = 8  # the IR that opset 17 came with: the oldest runtime that can run the graph can read it
MASKED = -1e30  # scores of keys a query may not see; exp underflows to exactly 0 in float32
# Protobuf refuses a message over 2 GiB; a model with more bytes of weights than this keeps them in
# model.onnx.data beside model.onnx (ONNX's external data), which ONNX Runtime reads from the same directory.
EXTERNAL_DATA_BYTES = 1 << 30


def _need_onnx():
    try:
        import onnx
    except ImportError as e:
        raise ImportError("to_onnx needs the onnx package: pip install 'tinyllm[export]'") from e
    return onnx


class _Graph:
    """Nodes and initializers in the making; each helper returns its output's name."""

    def __init__(self, onnx):
        self.onnx, self.h = onnx, onnx.helper
        self.nodes, self.inits, self.scalars, self.n = [], [], set(), 0

    def weight(self, name, array):
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def const(self, name, values, dtype=np.int64):
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(values, dtype), name))
        return name

    def op(self, op_type, *inputs, out=None, **attrs):
        self.n += 1
        out = out or f"{op_type}_{self.n}"
        self.nodes.append(self.h.make_node(op_type, list(inputs), [out], name=f"{op_type}_{self.n}", **attrs))
        return out

    def linear(self, x, prefix, layer):
        """x @ W^T + b with W stored as (in, out), so MatMul takes it as it is; no Add without a bias."""
        y = self.op("MatMul", x, self.weight(f"{prefix}.weight", host_array(layer.weight).T))
        return y if layer.bias is None else self.op("Add", y, self.weight(f"{prefix}.bias", host_array(layer.bias)))

    def layer_norm(self, x, prefix, ln):
        inputs = [x, self.weight(f"{prefix}.weight", host_array(ln.weight))]
        if ln.bias is not None:  # B is optional in LayerNormalization: bias=False leaves it out
            inputs.append(self.weight(f"{prefix}.bias", host_array(ln.bias)))
        return self.op("LayerNormalization", *inputs, axis=-1, epsilon=float(ln.eps))

    def gelu(self, x, approximate):
        """x Phi(x): 0.5 x (1 + erf(x / sqrt 2)), or GPT-2's 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))),
        node for node in the forms ONNX Runtime's GeluFusion and FastGeluFusion turn into one kernel."""
        half, one = self._scalar("gelu.half", 0.5), self._scalar("gelu.one", 1.0)
        if approximate == "tanh":
            cube = self.op("Pow", x, self._scalar("gelu.three", 3.0))
            inner = self.op("Add", x, self.op("Mul", cube, self._scalar("gelu.c", 0.044715)))
            t = self.op("Tanh", self.op("Mul", inner, self._scalar("gelu.sqrt_2_over_pi", math.sqrt(2 / math.pi))))
        else:
            t = self.op("Erf", self.op("Div", x, self._scalar("gelu.sqrt_2", math.sqrt(2))))
        return self.op("Mul", self.op("Mul", x, half), self.op("Add", t, one))

    def _scalar(self, name, value):
        """A float32 constant shared by every layer that uses it."""
        if name not in self.scalars:
            self.scalars.add(name)
            self.const(name, value, np.float32)
        return name


def onnx_model(model):
    """The ``onnx.ModelProto`` that ``to_onnx`` writes, and its notes; see the module docstring for the graph."""
    check_gpt(model, "to_onnx")
    onnx = _need_onnx()
    h, TP = onnx.helper, onnx.TensorProto
    c = model.config
    nh, hs, C = c.n_head, c.n_embd // c.n_head, c.n_embd
    notes = []
    dtype = model.wte.weight.data.dtype
    if dtype != np.float32:
        notes.append(f"{dtype} weights: written as float32")
    if c.pos_encoding == "sinusoidal":
        notes.append("sinusoidal positions: stored as a constant (block_size, n_embd) table of the same values")

    g = _Graph(onnx)

    # -- the causal mask, from the shapes alone: (T, S) True where key j lies after query i's position P + i
    axis0, one = g.const("axis0", [0]), g.const("scalar.one", 1)
    t_ = g.op("Squeeze", g.op("Shape", "input_ids", start=1, end=2), axis0)  # T, a scalar as Range wants
    p_ = g.op("Squeeze", g.op("Shape", "past_key_0", start=2, end=3), axis0)  # P
    s_ = g.op("Add", p_, t_)
    q_pos = g.op("Unsqueeze", g.op("Range", p_, s_, one), g.const("axis1", [1]))  # (T, 1): P .. S-1
    k_pos = g.op("Range", g.const("scalar.zero", 0), s_, one)  # (S,): 0 .. S-1
    future = g.op("Greater", k_pos, q_pos)  # (T, S)
    masked = g.const("attn.masked", MASKED, np.float32)
    scale = g.const("attn.scale", 1.0 / math.sqrt(hs), np.float32)  # scaled_dot_product_attention's 1/sqrt(hs)
    heads = g.const("shape.heads", [0, 0, nh, hs])  # (B, T, C) -> (B, T, nh, hs); 0 keeps that dim
    merged = g.const("shape.merged", [0, 0, C])

    # -- embeddings
    wte = g.weight("wte.weight", host_array(model.wte.weight))  # (vocab, C), shared with a tied head
    x = g.op("Add", g.op("Gather", wte, "input_ids", axis=0),  # (B, T, C)
             g.op("Gather", g.weight("wpe.weight", host_array(position_table(model))), "position_ids", axis=0))

    past_names = []
    for i, block in enumerate(model.h):
        p = f"h.{i}"
        a = g.layer_norm(x, f"{p}.ln_1", block.ln_1)
        qkv = g.linear(a, f"{p}.attn.c_attn", block.attn.c_attn)  # (B, T, 3C)
        q, k, v = (f"{p}.q", f"{p}.k", f"{p}.v")
        g.nodes.append(h.make_node("Split", [qkv, g.const(f"{p}.split", [C, C, C])], [q, k, v], axis=-1,
                                   name=f"Split_{p}"))
        q, k, v = (g.op("Transpose", g.op("Reshape", t, heads), perm=[0, 2, 1, 3]) for t in (q, k, v))  # (B, nh, T, hs)
        pk, pv = f"past_key_{i}", f"past_value_{i}"
        past_names += [pk, pv]
        k = g.op("Concat", pk, k, axis=2, out=f"present_key_{i}")  # (B, nh, S, hs)
        v = g.op("Concat", pv, v, axis=2, out=f"present_value_{i}")
        att = g.op("Mul", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])), scale)  # (B, nh, T, S)
        att = g.op("Softmax", g.op("Where", future, masked, att), axis=-1)
        y = g.op("Transpose", g.op("MatMul", att, v), perm=[0, 2, 1, 3])  # (B, T, nh, hs)
        y = g.linear(g.op("Reshape", y, merged), f"{p}.attn.c_proj", block.attn.c_proj)
        x = g.op("Add", x, y)
        m = g.layer_norm(x, f"{p}.ln_2", block.ln_2)
        m = g.gelu(g.linear(m, f"{p}.mlp.c_fc", block.mlp.c_fc), block.mlp.approximate)  # (B, T, 4C)
        x = g.op("Add", x, g.linear(m, f"{p}.mlp.c_proj", block.mlp.c_proj))
    x = g.layer_norm(x, "ln_f", model.ln_f)
    if model.lm_head.weight is model.wte.weight:
        # Tied: Gemm's transB reads wte as (C, vocab) in place, so the file holds the table once and no
        # Transpose runs; Gemm wants 2-D, hence the reshapes around it.
        flat = g.op("Gemm", g.op("Reshape", x, g.const("shape.rows", [-1, C])), wte, transB=1)  # (B*T, vocab)
        out_shape = g.op("Concat", g.op("Shape", "input_ids"), g.const("shape.vocab", [c.vocab_size]), axis=0)
        g.op("Reshape", flat, out_shape, out="logits")
    else:
        g.op("MatMul", x, g.weight("lm_head.weight", host_array(model.lm_head.weight).T), out="logits")

    F32, I64 = TP.FLOAT, TP.INT64
    cache = ["batch", nh, "past_seq", hs]
    inputs = [h.make_tensor_value_info("input_ids", I64, ["batch", "seq"]),
              h.make_tensor_value_info("position_ids", I64, ["batch", "seq"])]
    inputs += [h.make_tensor_value_info(n, F32, cache) for n in past_names]
    outputs = [h.make_tensor_value_info("logits", F32, ["batch", "seq", c.vocab_size])]
    outputs += [h.make_tensor_value_info(n.replace("past", "present"), F32, ["batch", nh, "past_seq + seq", hs])
                for n in past_names]
    graph = h.make_graph(g.nodes, "tinyllm_gpt", inputs, outputs, g.inits)
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="tinyllm",
                         ir_version=IR_VERSION,
                         doc_string="tinyllm GPT: logits and the key/value cache; see tinyllm.export.onnx")
    meta = {"model_type": "tinyllm-gpt", "config": json.dumps(c.to_dict())}
    h.set_model_props(proto, meta)
    return proto, notes


def to_onnx(model, tokenizer, out_dir):
    """Write ``out_dir/model.onnx``: a GPT's logits and key/value cache as an opset-17 ONNX graph (see the
    module docstring for its inputs, outputs and a decode loop with onnxruntime). Returns notes on what
    was converted. ``tokenizer`` (or None: the graph takes token ids) is written beside it as Hugging Face
tokenizer files (``tokenizer.json``), which ``tokenizers`` and transformers load.
    """
    check_gpt(model, "to_onnx")
    onnx = _need_onnx()
    with new_output_dir(out_dir, "to_onnx") as tmp:  # checks out_dir before the graph is built
        proto, notes = onnx_model(model)
        path = os.path.join(tmp, "model.onnx")
        big = sum(len(t.raw_data) for t in proto.graph.initializer) > EXTERNAL_DATA_BYTES
        onnx.save_model(proto, path, save_as_external_data=big, all_tensors_to_one_file=True,
                        location="model.onnx.data")
        if big:
            notes.append("weights over 1 GiB: stored in model.onnx.data beside model.onnx (ONNX external data)")
        if tokenizer is not None:  # ONNX holds no vocabulary: HF's tokenizer files go beside the graph
            notes += write_hf_tokenizer(tokenizer, tmp, vocab_size=model.config.vocab_size,
                                        model_max_length=model.config.block_size, who="to_onnx")
    return notes
