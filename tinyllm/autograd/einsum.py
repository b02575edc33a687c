"""``einsum``: one op whose backward is einsum again.

The forward contracts the operands two at a time, each pair as one batched matmul (BLAS, unlike
``np.einsum``'s loops): labels in both and still needed are batch dims, labels in both and no longer
needed are the contracted dim, the rest are the rows and columns. The gradient of operand i is the
einsum of the upstream gradient (labelled like the output) with every other operand, kept to operand
i's labels; a label only operand i has (summed in the forward) is broadcast back, and a size-1 dim
that the forward broadcast is summed back, as torch's einsum broadcasts size-1 dims.
"""
import string

import numpy as np

from .. import backend
from .engine import Function, Tensor

_LETTERS = set(string.ascii_letters)


def einsum(equation, *operands):
    """torch's ``einsum(equation, *operands)``, also ``einsum(equation, [a, b])``: letters a-z and A-Z,
    at most one ``...`` per term (broadcast like NumPy), an implicit output (the ellipsis, then the
    letters seen once, in alphabetical order, uppercase first) when there is no ``->``, and size-1
    dims broadcast against their label's size."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    for i, op in enumerate(operands):
        if not isinstance(op, Tensor):
            raise TypeError(f"einsum(): expected a Tensor as operand {i}, got {type(op).__name__}")
    dtypes = {op.dtype for op in operands}
    if len(dtypes) > 1:
        raise RuntimeError(f"einsum(): operands must share one dtype, got {sorted(str(d) for d in dtypes)}")
    inputs, output, sizes = _parse(equation, [op.shape for op in operands])
    return Einsum.apply(*operands, inputs=inputs, output=output, sizes=sizes)


class Einsum(Function):
    # out = einsum(x_1, ..., x_n)   =>   dx_i = einsum(dout, x_j for j != i) into x_i's labels
    def forward(ctx, *arrays, inputs, output, sizes):
        ctx.arrays, ctx.inputs, ctx.output, ctx.sizes = arrays, inputs, output, sizes
        out = _contract([_diagonal(a, labels) for a, labels in zip(arrays, inputs)],
                        [_unique(labels) for labels in inputs], output, sizes)
        xp = backend.get_array_module(out)
        if not out.flags.c_contiguous or any(xp.may_share_memory(out, a) for a in arrays):
            out = xp.array(out, copy=True, order="C")  # never a view of an input, nor a broadcast view
        return out

    def backward(ctx, g):
        xp = backend.get_array_module(g)
        grads = []
        for i, (a, labels) in enumerate(zip(ctx.arrays, ctx.inputs)):
            if not ctx.needs_input_grad[i]:
                grads.append(None)
                continue
            others = [j for j in range(len(ctx.arrays)) if j != i]
            own = _unique(labels)
            elsewhere = set(ctx.output).union(*[ctx.inputs[j] for j in others])
            kept = [label for label in own if label in elsewhere]
            grad = _contract([g] + [_diagonal(ctx.arrays[j], ctx.inputs[j]) for j in others],
                             [ctx.output] + [_unique(ctx.inputs[j]) for j in others], kept, ctx.sizes)
            # labels only this operand has were summed in the forward: their gradient is broadcast
            grad = grad.reshape([ctx.sizes[label] if label in kept else 1 for label in own])
            grad = xp.broadcast_to(grad, [ctx.sizes[label] for label in own])
            diag_shape = _diagonal_shape(a.shape, labels)
            axes = tuple(k for k, n in enumerate(diag_shape) if n == 1 and grad.shape[k] != 1)
            if axes:  # a size-1 dim the forward broadcast
                grad = grad.sum(axis=axes, keepdims=True)
            grads.append(_undiagonal(grad, labels, a.shape, a.dtype) if len(own) < len(labels)
                         else grad.astype(a.dtype, copy=False))
        return tuple(grads)


def _contract(arrays, inputs, output, sizes):
    """einsum over arrays whose labels are distinct within each: pairs as batched matmuls."""
    arrays, inputs = list(arrays), [list(labels) for labels in inputs]
    while len(arrays) > 1:
        needed = set(output).union(*inputs[2:])
        a, b = arrays.pop(0), arrays.pop(0)
        la, lb = inputs.pop(0), inputs.pop(0)
        out, labels = _contract_pair(a, la, b, lb, needed)
        arrays.insert(0, out)
        inputs.insert(0, labels)
    (a,), (labels,) = arrays, inputs
    a, labels = _sum_out(a, labels, set(output))
    out = a.transpose([labels.index(label) for label in output])
    xp = backend.get_array_module(out)
    return xp.broadcast_to(out, [sizes[label] for label in output])  # labels that only size-1 dims gave


def _sum_out(a, labels, keep):
    """Sum ``a`` over the labels not in ``keep``."""
    axes = tuple(k for k, label in enumerate(labels) if label not in keep)
    if not axes:
        return a, labels
    return a.sum(axis=axes), [label for label in labels if label in keep]


def _contract_pair(a, la, b, lb, needed):
    """Contract ``a`` (labels ``la``) with ``b`` (``lb``), keeping the labels in ``needed``.
    Returns the result and its labels: (batch, a's own, b's own)."""
    a, la = _sum_out(a, la, needed | set(lb))
    b, lb = _sum_out(b, lb, needed | set(la))
    shared = [label for label in la if label in lb]
    batch = [label for label in shared if label in needed]
    summed = [label for label in shared if label not in needed]
    rows = [label for label in la if label not in lb]
    cols = [label for label in lb if label not in la]
    # a summed label of size 1 on one side and n on the other: sum the n side first
    for label in summed:
        na, nb = a.shape[la.index(label)], b.shape[lb.index(label)]
        if na != nb:
            if na == 1:
                b = b.sum(axis=lb.index(label), keepdims=True)
            else:
                a = a.sum(axis=la.index(label), keepdims=True)
    a = a.transpose([la.index(label) for label in batch + rows + summed])
    b = b.transpose([lb.index(label) for label in batch + summed + cols])
    nbatch = len(batch)
    batch_a, batch_b = a.shape[:nbatch], b.shape[:nbatch]
    row_shape, col_shape = a.shape[nbatch:nbatch + len(rows)], b.shape[nbatch + len(summed):]
    k = int(np.prod(a.shape[nbatch + len(rows):], dtype=np.int64))
    a = a.reshape(batch_a + (int(np.prod(row_shape, dtype=np.int64)), k))  # (*batch, M, K)
    b = b.reshape(batch_b + (k, int(np.prod(col_shape, dtype=np.int64))))  # (*batch, K, N)
    out = a @ b  # (*batch, M, N); size-1 batch dims broadcast
    return out.reshape(out.shape[:nbatch] + row_shape + col_shape), batch + rows + cols


# -- repeated labels in one operand ('ii->i', 'ii'): work on the diagonal --------------------------


def _unique(labels):
    return list(dict.fromkeys(labels))


def _diagonal_shape(shape, labels):
    return tuple(shape[labels.index(label)] for label in _unique(labels))


def _diagonal(a, labels):
    """The diagonal over each repeated label (a view), its dims in first-seen label order."""
    if len(set(labels)) == len(labels):
        return a
    for label in _unique(labels):
        axes = [k for k, other in enumerate(labels) if other == label]
        while len(axes) > 1:
            xp = backend.get_array_module(a)
            a = xp.moveaxis(xp.diagonal(a, axis1=axes[0], axis2=axes[1]), -1, axes[0])
            labels = labels[:axes[1]] + labels[axes[1] + 1:]
            axes = [k for k, other in enumerate(labels) if other == label]
    return a


def _undiagonal(grad, labels, shape, dtype):
    """Scatter a gradient of the diagonal back into a zero array of the operand's shape."""
    xp = backend.get_array_module(grad)
    out = xp.zeros(shape, dtype)
    own = _unique(labels)
    index = []
    for k, label in enumerate(labels):
        j = own.index(label)
        ar = xp.arange(shape[k]).reshape([-1 if m == j else 1 for m in range(len(own))])
        index.append(ar)
    out[tuple(index)] = grad
    return out


# -- the equation ------------------------------------------------------------------------------


def _parse(equation, shapes):
    """The labels of each operand and of the output (an ellipsis becomes one integer label per dim,
    counted from the right) and every label's size."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    if "->" in rhs:
        raise RuntimeError(f"einsum(): equation {equation!r} has more than one '->'")
    terms = lhs.split(",")
    if len(terms) > len(shapes):
        raise RuntimeError(f"einsum(): fewer operands were provided ({len(shapes)}) than specified in "
                           f"the equation {equation!r} ({len(terms)})")
    if len(terms) < len(shapes):
        raise RuntimeError(f"einsum(): more operands were provided ({len(shapes)}) than specified in "
                           f"the equation {equation!r} ({len(terms)})")
    inputs, sizes, ellipsis_ndim = [], {}, 0
    for i, (term, shape) in enumerate(zip(terms, shapes)):
        letters = _letters(term, f"operand {i}")
        if "..." in term:
            n = len(shape) - (len(letters) - 1)
            if n < 0:
                raise RuntimeError(f"einsum(): operand {i} has {len(shape)} dims, fewer than the "
                                   f"{len(letters) - 1} subscripts in {term!r}")
            at = letters.index("...")
            labels = letters[:at] + list(range(-n, 0)) + letters[at + 1:]
            ellipsis_ndim = max(ellipsis_ndim, n)
        elif len(letters) != len(shape):
            raise RuntimeError(f"einsum(): the number of subscripts in {term!r} ({len(letters)}) does not "
                               f"match the number of dimensions ({len(shape)}) for operand {i} and no "
                               f"ellipsis was given")
        else:
            labels = letters
        for label in _unique(labels):
            dims = [n for other, n in zip(labels, shape) if other == label]
            if len(set(dims)) > 1:
                raise RuntimeError(f"einsum(): subscript {label} is repeated for operand {i} but the "
                                   f"sizes don't match, {dims[0]} != {dims[1]}")
        for label, n in zip(labels, shape):
            if label in sizes and n != sizes[label] and 1 not in (n, sizes[label]):
                what = "the ellipsis" if isinstance(label, int) else f"subscript {label}"
                raise RuntimeError(f"einsum(): {what} has size {n} for operand {i} which does not "
                                   f"broadcast with previously seen size {sizes[label]}")
            if label not in sizes or sizes[label] == 1:
                sizes[label] = n
        inputs.append(labels)
    ellipsis = list(range(-ellipsis_ndim, 0))
    if arrow:
        letters = _letters(rhs, "the output")
        output = []
        for label in letters:
            if label == "...":
                output.extend(ellipsis)
            elif label in output:
                raise RuntimeError(f"einsum(): output subscript {label} appears more than once in the output")
            elif label not in sizes:
                raise RuntimeError(f"einsum(): output subscript {label} does not appear in the equation "
                                   f"for any input operand")
            else:
                output.append(label)
    else:  # the ellipsis, then the letters seen exactly once, sorted (uppercase first)
        counts = {}
        for labels in inputs:
            for label in labels:
                if isinstance(label, str):
                    counts[label] = counts.get(label, 0) + 1
        output = ellipsis + sorted(label for label, c in counts.items() if c == 1)
    return inputs, output, sizes


def _letters(term, where):
    """A term's subscripts, '...' as one item."""
    out, k = [], 0
    while k < len(term):
        if term.startswith("...", k):
            if "..." in out:
                raise RuntimeError(f"einsum(): found '.' for {where} for which an ellipsis was already found")
            out.append("...")
            k += 3
            continue
        ch = term[k]
        if ch == ".":
            raise RuntimeError(f"einsum(): found '.' for {where} that is not part of any ellipsis")
        if ch not in _LETTERS:
            raise RuntimeError(f"einsum(): invalid subscript {ch!r} for {where}: subscripts must be in [a-zA-Z]")
        out.append(ch)
        k += 1
    return out
