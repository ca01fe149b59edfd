"""Memory plans (nth.kernel._plan, nth.engine._plan): exact kernel sizes, planning from shapes alone, the work
prediction against XLA's own memory analysis of the compiled batch, batch-size choice, and stage arithmetic."""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nth
from nth.engine._plan import plan_solve
from nth.kernel import format_bytes, kernel_bytes, plan_kernels
from nth.kernel._engine import _batch, _index_tuples, _ntk_spec
from nth.kernel._impl import implementation
from nth.kernel._plan import max_batch

GiB = 2**30


def abstract_mlp(width=32, depth=2, d=3, **kw):
    return eqx.filter_eval_shape(lambda: nth.init_mlp(0, d, width, depth, **kw))


def abstract_cnn():
    return eqx.filter_eval_shape(lambda: nth.init_cnn(0, (5, 5), 3, 2))


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_kernel_bytes_are_exact(dtype):
    """The planned bytes of every stored K^(r) equal the nbytes of what nth.kernels returns, for training inputs
    (n^r entries) and test inputs in the first slot (k n^(r-1)), in float64 and float32."""
    net = nth.init_mlp(0, 3, 8, 1, dtype=dtype)
    X = jnp.asarray(nth.default_problem(n=4, d=3, seed=0).X, dtype=dtype)
    Xt = jnp.asarray(nth.default_problem(n=2, d=3, seed=1).X, dtype=dtype)
    it = jnp.dtype(dtype).itemsize
    for first, rows in ((None, 4), (Xt, 2)):
        ks = nth.kernels(net, X, 3, first=first)
        plan = plan_kernels(net, 4, 3, first_rows=None if first is None else 2)
        assert sorted(plan.kernel_bytes) == sorted(ks) == [2, 3]
        for r in (2, 3):
            assert ks[r].dtype == dtype
            assert ks[r].nbytes == plan.kernel_bytes[r] == rows * 4 ** (r - 1) * it
            assert kernel_bytes(4, r, dtype, None if first is None else 2) == plan.kernel_bytes[r]


@pytest.mark.parametrize("make", [lambda: nth.init_mlp(0, 3, 32, 2), lambda: nth.init_cnn(0, (5, 5), 3, 2)],
                         ids=["mlp", "cnn"])
def test_plan_from_shapes_equals_plan_from_model(make):
    """plan_kernels and plan_solve on eqx.filter_eval_shape of the constructor (shapes only) give the same plan,
    field for field, as on the concrete model."""
    concrete, shapes = make(), eqx.filter_eval_shape(make)
    assert isinstance(jax.tree_util.tree_leaves(shapes)[0], jax.ShapeDtypeStruct)
    for kw in (dict(), dict(first_rows=2), dict(matrix_free=True)):
        assert plan_kernels(shapes, 6, 4, memory_budget=GiB, **kw) == plan_kernels(concrete, 6, 4, memory_budget=GiB,
                                                                                   **kw)
    a = plan_solve(shapes, n=6, n_test=2, p=4, memory_budget=GiB, dg=True)
    b = plan_solve(concrete, n=6, n_test=2, p=4, memory_budget=GiB, dg=True)
    assert a == b
    assert a.describe() == b.describe()


def test_huge_abstract_model_is_planned_without_allocating():
    """A width-10^6, depth-2 MLP (10^12 weights, 8 TB in float64) is planned from its shapes in well under a
    second, and a 1 GiB budget refuses it with a message naming the budget and the way to raise it."""
    m = 10**6
    start = time.perf_counter()
    shapes = abstract_mlp(width=m, depth=2, d=3)
    plan = plan_solve(shapes, n=8, n_test=0, p=4, memory_budget=2**62)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    assert plan.kernels.num_params == m * m + 3 * m + m
    assert plan.resident >= 8 * m * m  # the weights alone: nothing of that size could have been allocated here
    with pytest.raises(nth.MemoryBudgetError) as e:
        plan_solve(shapes, n=8, n_test=0, p=4, memory_budget=GiB)
    msg = str(e.value)
    assert "memory budget of 1.0 GiB" in msg
    assert "--memory-budget" in msg


def xla_batch_bytes(model, X, p, chunk, name="auto"):
    """XLA's memory analysis of the compiled kernel batch exactly as nth.kernel.kernel calls it (symmetric,
    training inputs in both slots, the top level's first ``chunk`` direction tuples): temp + output + arguments."""
    impl = implementation(model, name)
    idx = jnp.asarray(_index_tuples(X.shape[0], p - impl.level(p))[:chunk])
    params, static = nth.partition(model)
    spec = _ntk_spec(impl, p)
    fn = jax.jit(lambda q, X1, X2, i: _batch(spec, eqx.combine(q, static), X1, X2, i, True, False, ()))
    stats = fn.lower(params, X, X, idx).compile().memory_analysis()
    if stats is None:
        pytest.skip("this backend's compiled functions report no memory analysis")
    return stats.temp_size_in_bytes + stats.output_size_in_bytes + stats.argument_size_in_bytes


@pytest.mark.parametrize("case,name,p,chunk", [("mlp", "structured", 3, 4), ("cnn", "jvp", 3, 3),
                                               ("cnn", "contraction", 3, 1), ("cnn", "contraction", 4, 1),
                                               ("mlp", "contraction", 5, 2), ("mlp", "factored", 4, 4),
                                               ("cnn", "factored", 3, 1), ("cnn", "factored", 4, 1)])
def test_work_prediction_bounds_xla_memory_analysis(case, name, p, chunk):
    """The predicted bytes of one batch (work_bytes, plus the weights that the plan holds resident and XLA counts
    among the arguments) are an upper bound of what XLA's memory analysis says the compiled batch needs, and
    not a gross overestimate (<= 20x). Measured on CPU (jax 0.10, the suite's XLA optimization level 0), predicted
    / XLA: MLP (width 16, depth 2, n = 6, p = 3, 4 tuples, "structured") 3.27; CNN (5x5, width 3, depth 1, n = 3,
    p = 3, 3 tuples, "jvp") 5.07; "contraction" (the cnn's K^(3) and K^(4) whole in one call, 2.85 and 2.10; K^(5)
    of the MLP in batches of 2 tuples, 3.67); "factored" (MLP K^(4) in batches of 4, 5.63; cnn K^(3), K^(4), 8.21,
    8.18, its convolutions evaluated as patch products). The 20x bound leaves about 2.4x over the largest."""
    if case == "mlp":
        model = nth.init_mlp(0, 3, 16, 2)
        X = jnp.asarray(nth.default_problem(n=6, d=3, seed=0).X)
    else:
        model = nth.init_cnn(0, (5, 5), 3, 1)
        X = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5, 5)))
    n = X.shape[0]
    plan = plan_kernels(model, n, p, chunk=chunk, memory_budget=GiB, implementation=name)
    assert plan.implementation == name and plan.chunk == chunk
    predicted = plan.work_bytes + plan.num_params * plan.itemsize
    xla = xla_batch_bytes(model, X, p, chunk, name)
    print(f"{case} {name} p={p}: predicted / XLA = {predicted / xla:.2f}")
    assert xla <= predicted <= 20 * xla


def test_work_prediction_bounds_xla_with_test_inputs():
    """With k = 2 test inputs in the first slot (X1 != X, the non-symmetric path) the structured prediction bounds
    XLA's figure too (it once counted H + 1 factor arrays per row where the code keeps 3 H + 1: 0.87x of XLA)."""
    model = nth.init_mlp(0, 3, 16, 2)
    X = jnp.asarray(nth.default_problem(n=6, d=3, seed=0).X)
    Xt = X[:2]
    impl = implementation(model)
    idx = jnp.asarray(_index_tuples(6, 1)[:4])
    params, static = nth.partition(model)
    spec = _ntk_spec(impl, 3)
    fn = jax.jit(lambda q, X1, X2, i: _batch(spec, eqx.combine(q, static), X1, X2, i, False, False, ()))
    stats = fn.lower(params, Xt, X, idx).compile().memory_analysis()
    if stats is None:
        pytest.skip("this backend's compiled functions report no memory analysis")
    xla = stats.temp_size_in_bytes + stats.output_size_in_bytes + stats.argument_size_in_bytes
    plan = plan_kernels(model, 6, 3, chunk=4, first_rows=2, memory_budget=GiB)
    assert plan.work_bytes + plan.num_params * plan.itemsize >= xla


@pytest.mark.parametrize("model,name", [(abstract_mlp(), "auto"), (abstract_cnn(), "auto"),
                                        (abstract_mlp(), "contraction"), (abstract_mlp(), "factored"),
                                        (abstract_cnn(), "factored")],
                         ids=["mlp", "cnn", "mlp-contraction", "mlp-factored", "cnn-factored"])
def test_chosen_chunk_is_the_largest_power_of_two_that_fits(model, name):
    """Without an explicit chunk, the batch is a power of two, at most max_batch() (and the implementation's own
    bound: one tuple per call for "jvp" on a CPU), at most the number of
    direction tuples (n^(p-s) for an implementation that computes level s whole, n^(p-1-s) matrix-free), its
    work (times the models together) fits a quarter of the budget, and doubling it would break one of these."""
    impl = implementation(model, name)
    it = jnp.dtype(jax.tree_util.tree_leaves(model)[0].dtype).itemsize
    seen = set()
    for n, p, matrix_free, models in ((3, 3, False, 1), (5, 4, False, 1), (20, 3, False, 1), (5, 4, True, 1),
                                      (7, 4, False, 3), (6, 5, False, 1), (6, 6, True, 1)):
        tuples = n ** (p - 1 - impl.level(p - 1)) if matrix_free else n ** (p - impl.level(p))
        top = p - 1 if matrix_free else p
        base = models * (sum(kernel_bytes(n, r) for r in range(2, top + 1)) + nth.num_params(model) * it)
        w1 = models * impl.work_bytes(model, p, 1, n, n, matrix_free)
        for room in (1, 3, 40, 10**6):
            budget = 2 * base + 4 * room * w1
            plan = plan_kernels(model, n, p, memory_budget=budget, matrix_free=matrix_free, models=models,
                                implementation=name)
            c = plan.chunk
            seen.add(c)

            def work(b):
                return models * impl.work_bytes(model, p, b, n, n, matrix_free)

            cap = min(max_batch(), impl.max_batch(model) or max_batch(), tuples)
            assert c >= 1 and c & (c - 1) == 0
            assert c <= cap
            assert plan.work_bytes == impl.work_bytes(model, p, c, n, n, matrix_free)
            assert work(c) <= budget // 4
            assert 2 * c > cap or work(2 * c) > budget // 4
    assert min(seen) == 1
    if impl.max_batch(model) is None:  # the budgets above exercised both the budget and the caps
        assert max(seen) > 2


def test_explicit_chunk_is_kept_and_clipped():
    """An explicit chunk is used as given (even one that is not a power of two or exceeds max_batch()), only
    clipped to the number of direction tuples; a chunk < 1 or not an integer is refused."""
    shapes = abstract_mlp()
    assert plan_kernels(shapes, 5, 4, chunk=3, memory_budget=GiB).chunk == 3
    assert plan_kernels(shapes, 5, 4, chunk=max_batch() + 1, memory_budget=2**40).chunk == min(max_batch() + 1, 25)
    assert plan_kernels(shapes, 5, 4, chunk=10**6, memory_budget=2**40).chunk == 25
    assert plan_kernels(shapes, 5, 4, chunk=10**6, memory_budget=2**40, first_rows=2).chunk == 25
    assert plan_kernels(shapes, 5, 4, chunk=10**6, memory_budget=2**40, matrix_free=True).chunk == 5
    assert plan_kernels(shapes, 5, 2, chunk=8, memory_budget=GiB).chunk == 1  # p = 2: one (empty) tuple
    for bad in (0, -2, 2.5):
        with pytest.raises(nth.ConfigError, match="chunk"):
            plan_kernels(shapes, 5, 4, chunk=bad, memory_budget=GiB)


def test_plan_solve_scales_with_models_and_matrix_free_drops_the_top_kernel():
    """Every stage and the resident bytes of plan_solve grow exactly linearly with the models (seeds) computed
    together; matrix-free drops exactly K^(p) (training and test rows) from the resident bytes and adds one
    batch of contraction work to the truncated NTH stage."""
    shapes = abstract_mlp(width=32, depth=2, d=3)
    n, k, p = 6, 2, 4
    kw = dict(n=n, n_test=k, p=p, chunk=4, memory_budget=2**40, dg=True)
    one = plan_solve(shapes, **kw)
    assert set(one.stages) == {"kernels", "gradient flow", "truncated NTH", "DG correction"}
    for models in (2, 3):
        many = plan_solve(shapes, models=models, **kw)
        assert many.stages == {s: models * b for s, b in one.stages.items()}
        assert many.resident == models * one.resident
        assert many.peak == models * one.peak
        assert many.kernels.chunk == one.kernels.chunk == 4
    for models in (1, 3):
        dense = plan_solve(shapes, models=models, **kw)
        free = plan_solve(shapes, models=models, matrix_free=True, **kw)
        assert p in dense.kernels.kernel_bytes and p not in free.kernels.kernel_bytes
        assert p not in free.test_kernels.kernel_bytes
        assert dense.resident - free.resident == models * (kernel_bytes(n, p) + kernel_bytes(n, p, first_rows=k))
        assert free.stages["truncated NTH"] == dense.stages["truncated NTH"] + models * free.kernels.work_bytes
        assert free.stages["gradient flow"] == dense.stages["gradient flow"]


def test_plan_solve_refuses_its_own_peak_over_budget():
    """A budget that holds the kernels but not the peak of a later stage is refused by plan_solve itself, naming
    the budget, the seeds and --memory-budget."""
    shapes = abstract_mlp(width=32, depth=2, d=3)
    kw = dict(n=6, n_test=2, p=4, chunk=4, models=3)
    plan = plan_solve(shapes, memory_budget=2**40, **kw)
    budget = plan.peak - 1
    assert plan.kernels.total_bytes <= budget  # plan_kernels alone would accept it
    plan_solve(shapes, memory_budget=plan.peak, **kw)  # exactly the peak is accepted
    with pytest.raises(nth.MemoryBudgetError) as e:
        plan_solve(shapes, memory_budget=budget, **kw)
    msg = str(e.value)
    assert f"memory budget of {format_bytes(budget)}" in msg
    assert "batch fewer seeds" in msg and "--memory-budget" in msg


def test_format_bytes():
    """Byte counts render in binary units with one decimal, whole bytes below 1 KiB."""
    assert format_bytes(0) == "0 B"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(1024) == "1.0 KiB"
    assert format_bytes(1.5 * GiB) == "1.5 GiB"
    assert format_bytes(5 * 2**20 + 2**19) == "5.5 MiB"
    assert format_bytes(2**60) == "1.0 EiB"
    assert format_bytes(8e24) == "8e+24 B"  # beyond 1024 EiB: powers of ten, never "710542742865530112.0 PiB"
