"""Shape, indexing, in-place and selection ops held to torch: torch's reading of indices that mix
ints and index arrays, __setitem__ and the in-place ops (values, gradients, refusals), tril/triu,
repeat, flips, moves, topk, sort, gather, and multinomial's distribution."""
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import tinyllm as tl
from tinyllm.autograd import selection as S
from tinyllm.autograd import shapes as SH
from tests.helpers import check_op, shapes

pytestmark = pytest.mark.torch
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- indices for either library ----------------------------------------------------------------


class Zero_d(int):
    """An index part that becomes a 0-d integer tensor."""


def index_for(lib, spec):
    """``spec`` (NumPy arrays, ints, slices, ...) as tinyllm's (lib=tl) or torch's index."""
    import torch

    def part(p):
        if isinstance(p, Zero_d):
            return tl.tensor(int(p)) if lib is tl else torch.tensor(int(p))
        if isinstance(p, np.ndarray):
            return tl.tensor(p) if lib is tl else torch.from_numpy(p.copy())
        return p
    return tuple(part(p) for p in spec) if isinstance(spec, tuple) else part(spec)


I2 = np.array([0, 1])
TRICKY_INDICES = [
    (1, slice(None), I2),                   # the defect: torch puts idx's dim in place, NumPy first
    (Zero_d(1), slice(None), I2),           # a 0-d integer tensor selects like an int
    (I2, slice(None), Zero_d(-1)),
    (-1, slice(None), I2),
    (slice(None), 1, I2),
    (I2, 1, I2),
    (1, slice(None), I2, 2),
    (1, I2, 2),
    (I2, slice(None), 1),
    (1, I2),
    (I2, None, I2),
    (None, 1, Ellipsis, I2, None),
    (1, Ellipsis, I2),
    (I2, Ellipsis, I2),
    (Ellipsis, I2),
    True,
    (1, True),
    (I2, True, I2),
    (1, True, I2),
    (I2, slice(None), True),
    False,
    (1, slice(None), [0, 1]),
    [0, 1, 1],
    [[0, 1], [1, 0]],                       # a list of lists is a tuple of index arrays to torch
    (np.array([[0, 1], [1, 1]]), slice(1, 3), 0),
    (1, np.array([True, False, True, True, False]), slice(None), 0),
    (np.array([True, False]), 2, slice(None), I2),
    (slice(None, None, 2), 3, I2),
    (np.array([1, 1, 0]), 0, np.array([[0], [1]]), slice(None)),  # broadcast index arrays
]


@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence")
@pytest.mark.parametrize("spec", TRICKY_INDICES, ids=[str(i) for i in range(len(TRICKY_INDICES))])
def test_tricky_indices_give_torch_s_values_and_gradients(torch, spec):
    check_op([(2, 5, 6, 5)], lambda x: x[index_for(tl, spec)], lambda x: x[index_for(torch, spec)])


def test_the_int_and_array_defect(torch):
    assert tl.zeros(2, 5, 6, 5)[1, :, tl.tensor([0, 1])].shape == (5, 2, 5)
    assert tl.zeros(2, 5, 6, 5)[1, :, [0, 1]].shape == (5, 2, 5)


def test_repeated_indices_accumulate_gradients(torch):
    idx = np.array([0, 0, 2, 0])
    check_op([(3, 4, 2)], lambda x: x[1, :, idx[:2]], lambda x: x[1, :, torch.from_numpy(idx[:2])])
    check_op([(3, 4, 2)], lambda x: x[tl.tensor(idx[:3]), 1, :1],
             lambda x: x[torch.from_numpy(idx[:3]), 1, :1])


@st.composite
def shapes_and_indices(draw):
    shape = draw(shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    length = draw(st.integers(1, 3))  # index arrays share one length, so they broadcast
    kinds = [draw(st.sampled_from(["int", "slice", "array", "array", "mask", "zero_d", "none"]))
             for _ in shape[:draw(st.integers(1, len(shape)))]]
    if len(shape) >= 3 and draw(st.booleans()):  # half the time: an int and an index array, a slice apart
        i = draw(st.integers(0, len(shape) - 3))
        j = draw(st.integers(i + 2, len(shape) - 1))
        kinds = kinds + ["slice"] * (j + 1 - len(kinds))
        kinds[i], kinds[j] = draw(st.permutations([draw(st.sampled_from(["int", "zero_d"])), "array"]))
    spec, mask_used = [], False
    for n, kind in zip(shape, kinds):
        if kind == "none":
            spec.append(None)
            kind = "slice"
        if kind == "int":
            spec.append(draw(st.integers(-n, n - 1)))
        elif kind == "zero_d":
            spec.append(Zero_d(draw(st.integers(-n, n - 1))))
        elif kind == "slice":
            start, stop = draw(st.integers(-n, n)), draw(st.integers(-n, n))
            spec.append(slice(start, stop, draw(st.sampled_from([None, 1, 2]))))
        elif kind == "mask" and not mask_used:
            mask_used = True
            spec.append(np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))))
        else:
            spec.append(np.array(draw(st.lists(st.integers(-n, n - 1), min_size=length, max_size=length))))
    if draw(st.booleans()):  # anywhere when it stands for no dims, else at the end (so parts keep their dim)
        at = draw(st.integers(0, len(spec))) if len(kinds) == len(shape) else len(spec)
        spec.insert(at, Ellipsis)
    return shape, tuple(spec)


@FAST
@given(shapes_and_indices(), st.integers(0, 2**16))
def test_any_index_gives_torch_s_values_and_gradients(shape_and_spec, seed):
    import torch
    shape, spec = shape_and_spec
    try:
        torch.zeros(shape)[index_for(torch, spec)]
    except (IndexError, RuntimeError):  # torch refuses it (masks of different counts): so do we
        with pytest.raises((IndexError, RuntimeError, ValueError)):
            tl.zeros(shape)[index_for(tl, spec)]
        return
    check_op([shape], lambda x: x[index_for(tl, spec)], lambda x: x[index_for(torch, spec)], seed=seed,
             gradcheck=False)


@pytest.mark.parametrize("spec,error", [(5, "out of bounds|invalid"), ((0, 0, 0), "too many|invalid"),
                                        (1.5, "float"), (np.array([1.0]), "long, int, byte or bool")])
def test_bad_indices_raise_index_errors(spec, error):
    with pytest.raises(IndexError, match=error):
        tl.zeros(3, 2)[index_for(tl, spec)]


# -- __setitem__ and the in-place ops --------------------------------------------------------------


SETITEM_CASES = [  # (index, value shape): basic, advanced, masks, ints meeting arrays, broadcasts
    ((1,), (5,)),
    ((slice(1, 3),), (1, 5)),
    ((Ellipsis, 2), ()),
    ((np.array([0, 2]), slice(None)), (5,)),
    ((slice(None), np.array([4, 0, 1])), (3, 1)),
    ((1, np.array([0, 3])), ()),
    ((np.array([[True, False, True, False, True]] * 3)), ()),
    ((np.array([True, False, True]),), (2, 5)),
    ((None, 0, slice(None, None, 2)), (1, 1, 3)),
]


@pytest.mark.parametrize("index,value_shape", SETITEM_CASES)
def test_setitem_on_a_non_leaf_gives_torch_s_values_and_gradients(torch, index, value_shape):
    def fn(lib):
        def f(x, v):
            h = x * 2  # a non-leaf that requires grad: torch records CopySlices
            h[index_for(lib, index)] = v
            return h * h
        return f
    check_op([(3, 5), value_shape], fn(tl), fn(torch))


def test_setitem_with_ints_and_arrays_writes_where_torch_does(torch):
    data = np.arange(2 * 5 * 6 * 5, dtype=np.float64).reshape(2, 5, 6, 5)
    x, xt = tl.tensor(data), torch.from_numpy(data.copy())
    value = np.arange(5 * 2 * 5, dtype=np.float64).reshape(5, 2, 5) * -1
    x[1, :, tl.tensor([0, 1])] = value
    xt[1, :, torch.tensor([0, 1])] = torch.from_numpy(value)
    np.testing.assert_array_equal(x.numpy(), xt.numpy())


def test_setitem_value_that_requires_grad_makes_the_target_a_non_leaf(torch):
    check_op([(2,)], lambda v: _assign_into(tl.zeros(3, dtype=np.float64), v),
             lambda v: _assign_into(torch.zeros(3, dtype=torch.float64), v))


def _assign_into(target, v):
    target[1:] = v
    return target


def test_setitem_under_no_grad_writes_in_place_and_views_see_it():
    w = tl.randn(3, 4, requires_grad=True)
    view = w[0]
    with tl.no_grad():
        w[0, 1:] = 7.0
        w[w < 0] = 0.0
    assert w.is_leaf and w.requires_grad
    assert np.all(view.numpy()[1:] == 7.0) and np.all(w.numpy() >= 0)


def test_setitem_on_a_plain_tensor_writes_in_place(torch):
    x = tl.zeros(2, 3, dtype=np.int64)
    row = x[1]
    x[1] = 2.7  # truncated to the tensor's dtype, as torch
    x[0, tl.tensor([0, 2])] = tl.tensor([5, 6])
    xt = torch.zeros(2, 3, dtype=torch.int64)
    xt[1] = 2.7
    xt[0, torch.tensor([0, 2])] = torch.tensor([5, 6])
    np.testing.assert_array_equal(x.numpy(), xt.numpy())
    np.testing.assert_array_equal(row.numpy(), [2, 2, 2])
    assert x.dtype == np.int64 and not x.requires_grad


def test_nanogpt_top_k_filter_runs_under_no_grad(torch):
    data = np.random.default_rng(0).standard_normal((2, 7))
    logits, logits_t = tl.tensor(data), torch.from_numpy(data.copy())
    with tl.no_grad():
        v, _ = S.topk(logits, 3)
        logits[logits < v[:, [-1]]] = -float("Inf")
    v_t, _ = torch.topk(logits_t, 3)
    logits_t[logits_t < v_t[:, [-1]]] = -float("Inf")
    np.testing.assert_array_equal(logits.numpy(), logits_t.numpy())


@pytest.mark.parametrize("op,message", [
    (lambda w: w.__setitem__(0, 1.0), "a view of a leaf Variable that requires grad"),
    (lambda w: w.__setitem__((slice(None), 1), 1.0), "a view of a leaf Variable that requires grad"),
    (lambda w: w.__setitem__([0], 1.0), "^a leaf Variable that requires grad"),
    (lambda w: w.__setitem__(Ellipsis, 1.0), "^a leaf Variable that requires grad"),
    (lambda w: w.fill_(1.0), "^a leaf Variable that requires grad"),
    (lambda w: w.zero_(), "^a leaf Variable that requires grad"),
    (lambda w: w.copy_(np.ones((2, 3))), "^a leaf Variable that requires grad"),
    (lambda w: w.masked_fill_(np.ones((2, 3), bool), 0.0), "^a leaf Variable that requires grad"),
    (lambda w: w[0].fill_(1.0), "a view of a leaf Variable that requires grad"),
    (lambda w: w.T.zero_(), "a view of a leaf Variable that requires grad"),
    (lambda w: w.view(3, 2).__setitem__(0, 1.0), "a view of a leaf Variable that requires grad"),
])
def test_in_place_ops_on_a_leaf_that_requires_grad_raise_torch_s_error(torch, op, message):
    w = tl.randn(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match=message + r" is being used in an in-place operation\.$"):
        op(w)
    wt = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match=message):
        op(_torch_args(wt, torch))
    with tl.no_grad():  # under no_grad it is allowed: that is how parameters are initialised
        op(w)
    assert w.is_leaf and w.requires_grad


def _torch_args(wt, torch):
    class Adapter:  # torch's copy_ and masked_fill_ want tensors, not arrays
        def __setitem__(self, i, v):
            wt[i] = v

        def __getitem__(self, i):
            return wt[i]

        def __getattr__(self, name):
            method = getattr(wt, name)
            if not callable(method):
                return method
            return lambda *args: method(*[torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in args])
    return Adapter()


@pytest.mark.parametrize("src_shape", [(2, 3), (3,), (1, 3), ()])
def test_copy_broadcasts_casts_and_sends_the_gradient_to_the_source(torch, src_shape):
    check_op([(2, 3), src_shape], lambda x, s: (x * 1).copy_(s) * 3)
    x = tl.zeros(2, 3, dtype=np.float32)
    x.copy_(tl.tensor(np.arange(3)))  # int64 into float32: cast
    assert x.dtype == np.float32 and x.numpy().tolist() == [[0, 1, 2]] * 2


def test_copy_takes_arrays_and_torch_tensors(torch):
    x = tl.zeros(2, 2)
    view = x[0]
    x.copy_(torch.arange(4.0, requires_grad=True).reshape(2, 2) * 1)
    np.testing.assert_array_equal(view.numpy(), [0, 1])
    x.copy_(np.full((2,), 9))
    np.testing.assert_array_equal(x.numpy(), [[9, 9], [9, 9]])
    with pytest.raises(RuntimeError, match=r"\(2, 3\) does not broadcast to \(2, 2\)"):
        x.copy_(np.ones((2, 3)))


def test_fill_and_zero_give_torch_s_gradients(torch):
    check_op([(2, 3), ()], lambda x, v: (x * 1).fill_(v) * x, lambda x, v: (x * 1).fill_(v) * x)
    check_op([(2, 3)], lambda x: (x * 1).zero_() + x)
    with pytest.raises(RuntimeError, match="0-d tensor"):
        tl.zeros(3).fill_(tl.ones(2))


def test_masked_fill_in_place_and_with_a_value_that_requires_grad(torch):
    mask = np.array([[True, False, True], [False, False, True]])
    check_op([(2, 3), mask], lambda x, m: (x * 1).masked_fill_(m, -2.0) * x)
    check_op([(2, 3), mask, ()], lambda x, m, v: (x * 1).masked_fill_(m, v) * x)
    check_op([(2, 3), mask[0], ()], lambda x, m, v: x.masked_fill(m, v) ** 2)
    x = tl.zeros(2, 3)
    row = x[1]
    x.masked_fill_(tl.tensor(mask), 5.0)
    np.testing.assert_array_equal(row.numpy(), [0, 0, 5])
    with pytest.raises(RuntimeError, match="boolean masks"):
        x.masked_fill_(tl.tensor([1, 0, 1]), 1.0)
    with pytest.raises(RuntimeError, match="0-d tensor"):
        x.masked_fill(tl.tensor(mask), tl.ones(3))


def test_recorded_in_place_ops_keep_earlier_gradients_right(torch):
    # h is saved by h * h before the write; the write must not change what that product's backward uses
    def fn(x, v):
        h = x.exp()
        y = h * h
        h[0] = v
        return y.sum() + (h * 3).sum()
    check_op([(3,), ()], fn, lambda x, v: _torch_version_of(fn, x, v))


def _torch_version_of(fn, x, v):
    import torch  # torch refuses to backward through exp after h is written: write a copy instead
    h = x.exp()
    y = h * h
    h2 = h.clone()
    h2[0] = v
    return y.sum() + (h2 * 3).sum()


def test_detach_in_place_and_retained_grads():
    x = tl.randn(3, requires_grad=True)
    h = x * 2
    h.detach_()
    assert h.is_leaf and not h.requires_grad
    h2 = x * 2
    h2.retain_grad()
    h2[0] = 0.0
    (h2 * 3).sum().backward()
    np.testing.assert_array_equal(h2.grad, [3, 3, 3])
    np.testing.assert_array_equal(x.grad, [0, 6, 6])


def test_setitem_refuses_lists_and_mismatched_shapes(torch):
    with pytest.raises(TypeError, match="list"):
        tl.zeros(3)[0:2] = [1, 2]
    with pytest.raises(RuntimeError, match="broadcast"):
        tl.zeros(3)[0] = tl.ones(2)


# -- triangles, repeats, flips and moves -------------------------------------------------------


@pytest.mark.parametrize("diagonal", [-2, -1, 0, 1, 3])
@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (2, 3, 4), (2, 1, 4, 3)])
def test_tril_and_triu(torch, shape, diagonal):
    check_op([shape], lambda x: SH.tril(x, diagonal), lambda x: torch.tril(x, diagonal))
    check_op([shape], lambda x: x.triu(diagonal=diagonal))


def test_tril_of_bool_and_int_tensors_and_1d_refusal(torch):
    ones = np.ones((3, 3), dtype=bool)
    np.testing.assert_array_equal(tl.tensor(ones).tril().numpy(), torch.from_numpy(ones).tril().numpy())
    assert tl.ones(3, 3, dtype=np.int64).triu(1).dtype == np.int64
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        tl.ones(3).tril()


@FAST
@given(shapes(min_dims=0, max_dims=3, max_side=3), st.lists(st.integers(0, 3), min_size=0, max_size=2),
       st.integers(0, 2**16))
def test_repeat_tiles_and_sums_the_gradient_of_each_tile(shape, extra, seed):
    import torch
    sizes = tuple(extra) + tuple((seed >> (2 * i)) % 3 + (i % 2) for i in range(len(shape)))
    if not sizes:  # both libraries want at least one size
        with pytest.raises(TypeError):
            tl.ones(shape).repeat()
        return
    check_op([shape], lambda x: x.repeat(*sizes), seed=seed, gradcheck=False)


def test_repeat_refuses_too_few_sizes(torch):
    with pytest.raises(RuntimeError, match="at least one per dimension"):
        tl.ones(2, 3).repeat(2)
    check_op([(2, 3)], lambda x: x.repeat(2, 1, 3))
    check_op([(2, 3)], lambda x: x.repeat((1, 0)))


@pytest.mark.parametrize("repeats,dim", [(2, 0), (3, 1), (2, None), (np.array([1, 0, 2]), 0),
                                         (np.array([2]), 1), (np.array([0, 1, 3, 1]), -1)])
def test_repeat_interleave(torch, repeats, dim):
    def fn(lib):
        r = repeats if isinstance(repeats, int) else (tl.tensor(repeats) if lib is tl else torch.from_numpy(repeats))
        return (lambda x: SH.repeat_interleave(x, r, dim)) if lib is tl else (lambda x: torch.repeat_interleave(x, r, dim))
    check_op([(3, 4)], fn(tl), fn(torch))
    counts = np.array([2, 0, 1])
    np.testing.assert_array_equal(SH.repeat_interleave(tl.tensor(counts)).numpy(),
                                  torch.repeat_interleave(torch.from_numpy(counts)).numpy())


@pytest.mark.parametrize("index", [np.array([2, 0, 2]), np.array([1]), np.array([], dtype=np.int64), np.array(3)])
def test_index_select(torch, index):
    check_op([(3, 4, 2)], lambda x: x.index_select(1, tl.tensor(index)),
             lambda x: x.index_select(1, torch.from_numpy(index)))


@FAST
@given(shapes(min_dims=1, max_dims=4, max_side=4), st.integers(0, 2**16))
def test_flip_roll_and_movedim(shape, seed):
    import torch
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    dims = tuple(int(d) - ndim * int(rng.integers(2)) for d in rng.permutation(ndim)[:rng.integers(1, ndim + 1)])
    shifts = tuple(int(s) for s in rng.integers(-5, 6, len(dims)))
    check_op([shape], lambda x: x.flip(dims), seed=seed, gradcheck=False)
    check_op([shape], lambda x: x.roll(shifts, dims), seed=seed, gradcheck=False)
    check_op([shape], lambda x: x.roll(shifts[0]), seed=seed, gradcheck=False)
    dest = tuple(int(d) for d in rng.permutation(ndim)[:len(dims)])
    check_op([shape], lambda x: SH.movedim(x, dims, dest), lambda x: torch.movedim(x, dims, dest), seed=seed,
             gradcheck=False)


def test_flip_roll_movedim_gradcheck_and_errors(torch):
    check_op([(2, 3, 4)], lambda x: x.flip((0, -1)))
    check_op([(2, 3, 4)], lambda x: x.roll((1, -2), (0, 2)))
    check_op([(2, 3, 4)], lambda x: x.movedim(0, -1))
    check_op([()], lambda x: x.flip(()), lambda x: x.flip(()))
    with pytest.raises(RuntimeError, match="multiple times"):
        tl.ones(2, 3).flip((0, -2))
    with pytest.raises(RuntimeError, match="same length"):
        tl.ones(2, 3).roll((1, 2), 0)
    with pytest.raises(IndexError, match="out of range"):
        tl.ones(2, 3).flip(2)


@pytest.mark.parametrize("dim,start,length", [(0, 0, 2), (1, 1, 3), (-1, -3, 2), (1, 4, 0)])
def test_narrow_and_unbind(torch, dim, start, length):
    check_op([(3, 4)], lambda x: x.narrow(dim, start, length))
    check_op([(3, 4)], lambda x: x.unbind(dim))
    with pytest.raises(RuntimeError, match="exceeds dimension size"):
        tl.ones(3, 4).narrow(1, 2, 3)


# -- topk, sort, gather ------------------------------------------------------------------------


def _distinct(shape, seed):
    """Values with no ties, so torch's choice of index is the only one."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n).reshape(shape) - n / 2) / 3


@FAST
@given(shapes(min_dims=1, max_dims=3, max_side=5), st.integers(0, 2**16), st.booleans())
def test_topk_and_sort_pick_torch_s_values_indices_and_gradients(shape, seed, largest):
    import torch
    data = _distinct(shape, seed)
    dim = seed % len(shape) - (seed // 7) % 2 * len(shape)
    k = seed % (shape[dim] + 1)
    check_op([data], lambda x: S.topk(x, k, dim, largest), lambda x: torch.topk(x, k, dim, largest),
             seed=seed, gradcheck=False)
    check_op([data], lambda x: x.sort(dim, descending=largest), seed=seed, gradcheck=False)
    out, ref = S.argsort(tl.tensor(data), dim, largest), torch.argsort(torch.from_numpy(data), dim=dim,
                                                                          descending=largest)
    np.testing.assert_array_equal(out.numpy(), ref.numpy())
    assert out.dtype == np.int64


def test_topk_and_sort_gradcheck_and_unpacking(torch):
    data = _distinct((3, 6), 1)
    check_op([data], lambda x: x.topk(4))
    check_op([data], lambda x: tuple(S.sort(x, 0, descending=True)), lambda x: tuple(torch.sort(x, 0, descending=True)))
    values, indices = S.topk(tl.tensor(data), 2, dim=0, largest=False)
    result = S.topk(tl.tensor(data), 2, dim=0, largest=False)
    assert result.values is not values and np.array_equal(result.values.numpy(), values.numpy())
    assert np.array_equal(result.indices.numpy(), indices.numpy())


def test_sort_ties_nan_and_inf_match_torch_stable_sort(torch):
    data = np.array([[1.0, 3, 3, -np.inf, 3, 1, np.nan, 0, np.inf, np.nan] * 3])
    for descending in (False, True):
        ours = S.sort(tl.tensor(data), descending=descending)
        theirs = torch.sort(torch.from_numpy(data), descending=descending, stable=True)
        np.testing.assert_array_equal(ours.values.numpy(), theirs.values.numpy())
        np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())
    # topk: NaN counts as the largest, -inf as the smallest
    ours, theirs = S.topk(tl.tensor(data[0, :8]), 3), torch.topk(torch.from_numpy(data[0, :8]), 3)
    np.testing.assert_array_equal(ours.values.numpy(), theirs.values.numpy())
    assert ours.indices.numpy()[0] == theirs.indices.numpy()[0] == 6
    ours, theirs = S.topk(tl.tensor(data[0, :8]), 2, largest=False), torch.topk(torch.from_numpy(data[0, :8]), 2, largest=False)
    np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())


def test_topk_refuses_k_larger_than_the_dim(torch):
    with pytest.raises(RuntimeError, match="out of range"):
        S.topk(tl.ones(2, 3), 4)
    with pytest.raises(IndexError, match="out of range"):
        S.topk(tl.ones(2, 3), 1, dim=2)


def test_argmax_and_argmin_functions(torch):
    data = _distinct((3, 4), 2)
    for name in ("argmax", "argmin"):
        for kwargs in ({}, {"dim": 1}, {"dim": 0, "keepdim": True}):
            ours, theirs = getattr(S, name)(tl.tensor(data), **kwargs), getattr(torch, name)(torch.from_numpy(data), **kwargs)
            assert ours.dtype == np.int64
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("dim,index", [
    (1, np.array([[0, 0, 3], [2, 1, 1], [3, 3, 3]])),
    (0, np.array([[2, 0, 1, 2], [0, 0, 0, 0]])),
    (-1, np.array([[1], [0]])),                 # smaller than the input outside dim
    (0, np.array([[1, 2]])),
])
def test_gather(torch, dim, index):
    check_op([(3, 4)], lambda x: S.gather(x, dim, tl.tensor(index)),
             lambda x: torch.gather(x, dim, torch.from_numpy(index)))
    check_op([(3, 4)], lambda x: x.gather(dim, tl.tensor(index)) * 2,
             lambda x: x.gather(dim, torch.from_numpy(index)) * 2)


@FAST
@given(shapes(min_dims=1, max_dims=3, max_side=4), st.integers(0, 2**16))
def test_gather_over_shapes(shape, seed):
    import torch
    rng = np.random.default_rng(seed)
    dim = int(rng.integers(len(shape)))
    index_shape = tuple(int(rng.integers(1, n + 1)) if d != dim else int(rng.integers(0, 5))
                        for d, n in enumerate(shape))
    index = rng.integers(0, shape[dim], index_shape)
    check_op([shape], lambda x: x.gather(dim, tl.tensor(index)),
             lambda x: x.gather(dim, torch.from_numpy(index)), seed=seed, gradcheck=False)


def test_gather_refuses_bad_indices(torch):
    with pytest.raises(RuntimeError, match="out of bounds"):
        S.gather(tl.ones(2, 3), 1, tl.tensor([[3]]))
    with pytest.raises(RuntimeError, match="as many dims"):
        S.gather(tl.ones(2, 3), 1, tl.tensor([0]))
    with pytest.raises(RuntimeError, match="larger than the input"):
        S.gather(tl.ones(2, 3), 1, tl.tensor([[0], [0], [0]]))


# -- multinomial -------------------------------------------------------------------------------


def test_multinomial_with_replacement_follows_the_weights():
    weights = np.array([[1.0, 0.0, 2.0, 5.0, 2.0], [0.0, 0.0, 3.0, 0.0, 1.0]])
    tl.manual_seed(0)
    draws = S.multinomial(tl.tensor(weights), 20000, replacement=True)
    assert draws.shape == (2, 20000) and draws.dtype == np.int64
    for row, w in zip(draws.numpy(), weights):
        counts = np.bincount(row, minlength=len(w))
        expected = w / w.sum() * len(row)
        assert np.all(counts[w == 0] == 0)
        nonzero = w > 0  # chi-square with 4 d.o.f.: 40 is far beyond its 1e-7 tail
        assert np.sum((counts[nonzero] - expected[nonzero]) ** 2 / expected[nonzero]) < 40


def test_multinomial_without_replacement():
    tl.manual_seed(1)
    weights = np.array([1.0, 0.0, 2.0, 4.0, 8.0, 0.0])
    firsts = np.zeros(6)
    for _ in range(3000):
        draw = S.multinomial(tl.tensor(weights), 4).numpy()
        assert len(set(draw)) == 4 and 1 not in draw and 5 not in draw
        firsts[draw[0]] += 1
    expected = weights / weights.sum() * 3000  # the first draw follows the weights
    nonzero = weights > 0
    assert np.sum((firsts[nonzero] - expected[nonzero]) ** 2 / expected[nonzero]) < 40
    # zero weights are drawn only once every positive weight is taken, as torch does
    assert sorted(S.multinomial(tl.tensor([0.0, 1.0, 0.0]), 3).tolist()) == [0, 1, 2]
    assert S.multinomial(tl.tensor([0.0, 1.0, 0.0]), 3).tolist()[0] == 1


def test_multinomial_is_reproducible_with_manual_seed():
    weights = tl.tensor([[0.2, 0.3, 0.5]] * 3)
    tl.manual_seed(7)
    a = S.multinomial(weights, 5, True).numpy(), weights.multinomial(2).numpy()
    tl.manual_seed(7)
    b = S.multinomial(weights, 5, True).numpy(), weights.multinomial(2).numpy()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert S.multinomial(tl.tensor([1.0, 2.0]), 1).shape == (1,)


@pytest.mark.parametrize("weights,n,replacement,message", [
    ([1.0, -1.0], 1, False, "element < 0"),
    ([1.0, np.inf], 1, True, "inf"),
    ([1.0, np.nan], 1, False, "nan"),
    ([0.0, 0.0], 1, True, "sum of probabilities <= 0"),
    ([1.0, 1.0], 3, False, "without replacement"),
    ([1.0, 1.0], 0, True, "n_sample <= 0"),
    ([[[1.0]]], 1, True, "1 or 2 dim"),
    ([1, 2], 1, True, "floating-point"),
])
def test_multinomial_refuses_what_torch_refuses(torch, weights, n, replacement, message):
    with pytest.raises(RuntimeError, match=message):
        S.multinomial(tl.tensor(weights), n, replacement)
    with pytest.raises(RuntimeError):
        torch.multinomial(torch.tensor(weights), n, replacement)


# -- in-place arithmetic (add_, mul_, +=, ...) and random fills -----------------------------------


IN_PLACE_ARITHMETIC = [
    ("add_", lambda x, y: x.add_(y)), ("add_ alpha", lambda x, y: x.add_(y, alpha=-0.5)),
    ("sub_", lambda x, y: x.sub_(y)), ("mul_", lambda x, y: x.mul_(y)), ("div_", lambda x, y: x.div_(y)),
    ("pow_", lambda x, y: x.abs().pow_(y)), ("clamp_", lambda x, y: x.clamp_(-0.5, 0.5).mul_(y)),
    ("neg_ exp_", lambda x, y: x.neg_().exp_() * y), ("tanh_", lambda x, y: x.tanh_() * y),
    ("sqrt_", lambda x, y: x.abs().sqrt_() * y), ("relu_", lambda x, y: x.relu_() * y),
    ("+= *= -= /=", lambda x, y: _augmented(x, y)),
]


def _augmented(x, y):
    x += y
    x *= y
    x -= 1.5
    x /= y
    return x


@pytest.mark.parametrize("name,op", IN_PLACE_ARITHMETIC, ids=[c[0] for c in IN_PLACE_ARITHMETIC])
def test_in_place_arithmetic_on_a_graph_tensor_matches_torch(name, op):
    """On a non-leaf that requires grad torch records the write: values and both gradients agree."""
    check_op([(3, 4), (4,)], lambda x, y: op(x * 1, y), low=[-2, 0.5], high=[2, 2])


WRITES_INTO_X = [
    ("add_", lambda x, y: x.add_(y, alpha=2)), ("sub_", lambda x, y: x.sub_(y)), ("mul_", lambda x, y: x.mul_(y)),
    ("div_", lambda x, y: x.div_(y)), ("pow_", lambda x, y: x.pow_(y)), ("clamp_", lambda x, y: x.clamp_(0.7, 1.5)),
    ("neg_", lambda x, y: x.neg_()), ("exp_", lambda x, y: x.exp_()), ("tanh_", lambda x, y: x.tanh_()),
    ("sqrt_", lambda x, y: x.sqrt_()), ("relu_", lambda x, y: x.sub_(1).relu_()), ("+= *= -= /=", _augmented),
]


@pytest.mark.parametrize("name,op", WRITES_INTO_X, ids=[c[0] for c in WRITES_INTO_X])
def test_in_place_arithmetic_without_grad_writes_through_views_as_torch(torch, name, op):
    data = np.random.default_rng(1).uniform(0.5, 2, (3, 4))
    y = np.random.default_rng(2).uniform(0.5, 2, 4)
    ours, theirs = tl.tensor(data), torch.tensor(data)
    ours_view, theirs_view = ours[1:], theirs[1:]  # views see the write in both libraries
    result = op(ours_view, tl.tensor(y))
    op(theirs_view, torch.tensor(y))
    assert result is ours_view
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)


def test_in_place_arithmetic_refusals_match_torch(torch):
    leaf = tl.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        leaf.add_(1)
    with pytest.raises(RuntimeError):
        torch.zeros(3, requires_grad=True).add_(1)
    with tl.no_grad():
        leaf.add_(1)  # allowed under no_grad, as torch
    np.testing.assert_array_equal(leaf.numpy(), [1, 1, 1])
    ints = tl.tensor([1, 2])
    with pytest.raises(RuntimeError, match="can't be cast"):
        ints.add_(0.5)
    with pytest.raises(RuntimeError):
        torch.tensor([1, 2]).add_(0.5)
    ints.add_(3)
    assert ints.dtype == tl.long and ints.tolist() == [4, 5]


def test_normal_and_uniform_fill_in_place_from_tinyllm_s_generator():
    w = tl.zeros(400, 500)
    tl.manual_seed(0)
    assert w.normal_(mean=1.0, std=0.02) is w
    first = w.numpy().copy()
    assert abs(first.mean() - 1.0) < 1e-3 and abs(first.std() - 0.02) < 1e-3
    tl.manual_seed(0)
    np.testing.assert_array_equal(w.normal_(1.0, 0.02).numpy(), first)  # reproducible with the seed
    w.uniform_(-0.1, 0.3)
    assert w.dtype == tl.float32 and -0.1 <= w.numpy().min() and w.numpy().max() < 0.3
    assert abs(w.numpy().mean() - 0.1) < 2e-3
    leaf = tl.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        leaf.normal_()
    with tl.no_grad():
        leaf.uniform_(2, 3)
    assert leaf.requires_grad and (leaf.numpy() >= 2).all()
