"""The run engine: data -> model(s) -> kernels -> truncated NTH at every level q = 2..p, DG, the m = inf row, true
gradient flow (and gradient descent) -> errors. One path for one seed and for several seeds of one width.

Several seeds of one configuration are one computation: their models have identical shapes, so the
parameters are stacked along a leading seed axis and every vmappable stage (kernels, flow, NTH levels) runs
once for all of them (each Diffrax solve with its own step size per seed); the per-seed stages (DG's
eigendecompositions, gradient descent) loop. One seed is the same path with a batch of one, solved unbatched.
Writing files is not done here (:mod:`nth.io` does it); every check that can fail on user input runs before
the expensive stages.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from .._precision import float64_if_asked
from ..compare import f_error, k2_error
from ..data import Dataset, ProblemShape, check_labels, load_problem, problem_shape, read_npz
from ..dynamics import batch_schedule, default_horizon, gradient_descent, gradient_flow, stable_lr
from ..errors import ConfigError, DataError
from ..kernel import KernelOperator, Spectrum, limiting_kernels
from ..kernel import kernels as compute_kernels, kernels_and_test
from ..kernel import device_mesh
from ..losses import decisions
from ..models import AbstractModel, mlp_from_arrays, model_dtype, num_outputs, num_params, output_shape, preset
from ._config import DEFAULT_WIDTH, DTYPES, SolveConfig
from ._plan import SolvePlan, plan_solve
from ._result import Measures, Prediction, SolveResult, float32_warnings
from ._rows import RowInputs, pick_seed, rows_for
from ._spectrum import spectra_along, spectrum_of

def _data_args(cfg: SolveConfig) -> dict[str, Any]:
    return cfg.problem.sizes(images=cfg.model is None and cfg.arch == "cnn")


def load_data(cfg: SolveConfig) -> Dataset:
    """The configured dataset (built-in, digits, or an ``.npz`` file); digits as 8x8 images for a cnn. For a
    loss on class labels, targets ``y`` of an ``.npz`` without ``labels`` are its labels (checked here)."""
    data = load_problem(cfg.data, seed=cfg.data_seed, normalization=cfg.normalization, **_data_args(cfg))
    if cfg.loss_fn.takes_labels and data.labels is None and data.has_targets:
        data = dataclasses.replace(data, labels=check_labels("y", data.y, data.n, data.source))
    return data


def run_targets(cfg: SolveConfig, data: Dataset, out_shape: tuple[int, ...]) -> Array:
    """The targets the run trains on, checked against the loss and the outputs' shape (docs/math.md section 10),
    in the run's dtype: the labels for a loss on labels, ``y`` otherwise."""
    loss, dtype = cfg.loss_fn, DTYPES[cfg.dtype]
    y = loss.targets(loss.raw_targets(data.y, data.labels), data.n, out_shape, where=data.source, dtype=dtype)
    if jnp.issubdtype(y.dtype, jnp.inexact) and not bool(jnp.isfinite(y).all()):
        raise DataError(f"{data.source}: 'y' overflows {cfg.dtype} (entries up to {float(np.max(np.abs(data.y))):.3g}); "
                        "rescale the data or use --dtype float64")
    return y


def data_shape(cfg: SolveConfig) -> ProblemShape:
    """The sizes of the configured dataset, from the arguments and file headers alone (nothing is loaded)."""
    return problem_shape(cfg.data, **_data_args(cfg))


def build_model(cfg: SolveConfig, data: Dataset | ProblemShape, seed: int) -> AbstractModel:
    """The model of ``cfg`` with the initial weights of ``seed`` (or from the weights file), checked against the
    data and the loss: input shape, and outputs of shape (n,) or (n, k) (shapes only: nothing is computed)."""
    dtype = DTYPES[cfg.dtype]
    if cfg.weights is None:
        outputs = 1 if cfg.model is not None else cfg.resolved_outputs(data.classes, data.targets)
        model = cfg.network.build(seed=seed, width=cfg.width or DEFAULT_WIDTH, in_shape=data.in_shape, dtype=dtype,
                                     outputs=outputs)
    else:
        model = mlp_from_arrays(read_npz(cfg.weights, "weights"), cfg.activation, beta=cfg.beta, dtype=dtype,
                                source=str(cfg.weights))
        if cfg.param != "ntk":  # the file holds theta; the parametrization sets the per-layer learning rates
            model = dataclasses.replace(model, lrs=preset(cfg.param, model.depth).lrs(model.width))
        if data.in_shape != (model.in_dim,):
            raise DataError(f"shape mismatch: weights file {cfg.weights!r} has W1 of shape ({model.width}, "
                            f"{model.in_dim}), so inputs must have d = {model.in_dim}, but the data ({data.source}) "
                            + (f"has d = {data.d}" if len(data.in_shape) == 1 else f"has inputs of shape {data.in_shape}"))
    check_model_data(model, data, cfg.weights or cfg.model or cfg.arch)
    out_shape = output_shape(model, data.in_shape, dtype)
    cfg.loss_fn.check_outputs(out_shape, f"{cfg.weights or cfg.model or cfg.arch} with the {cfg.loss_fn.describe()} loss")
    return model


def check_model_data(model: AbstractModel, data: Dataset | ProblemShape, name: str) -> None:
    """The model must accept the data's inputs and return one output per input, (n,), or k, (n, k) (traced, not
    computed)."""
    shape = model.in_shape
    if shape is not None and tuple(shape) != data.in_shape:
        raise DataError(f"shape mismatch: {name} takes inputs of shape {tuple(shape)}, but the data ({data.source}) "
                        f"has inputs of shape {data.in_shape}")
    X = jax.ShapeDtypeStruct((data.n,) + tuple(data.in_shape), model_dtype(model))
    try:
        out = eqx.filter_eval_shape(lambda m, x: m(x), model, X)
    except Exception as e:  # the user's model cannot take these inputs
        raise DataError(f"{name} cannot be applied to inputs of shape {X.shape} ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from None
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) not in (1, 2) or shape[0] != data.n:
        raise DataError(f"{name} maps inputs of shape {X.shape} to outputs of shape "
                        f"{shape if shape is not None else type(out).__name__}; nth needs one output per input, "
                        f"shape ({data.n},), or k outputs per input, shape ({data.n}, k)")


def abstract_model(cfg: SolveConfig, data: Dataset | ProblemShape) -> AbstractModel:
    """The model's shapes without its weights (for the memory plan: nothing is allocated)."""
    return eqx.filter_eval_shape(lambda: build_model(cfg, data, cfg.seed))


def plan_run(cfg: SolveConfig, data: Dataset | ProblemShape, model: AbstractModel | None = None,
             models: int = 1) -> SolvePlan:
    """The memory plan of a run of ``cfg`` on ``data`` (its sizes suffice; ``models`` seeds together); raises
    MemoryBudgetError if over budget."""
    model = abstract_model(cfg, data) if model is None else model
    return plan_solve(model, n=data.n, n_test=data.k, p=cfg.p, num_times=cfg.num_times,
                      memory_budget=cfg.memory_budget, chunk=cfg.chunk, matrix_free=cfg.matrix_free, dg=cfg.use_dg,
                      nth_solver=cfg.nth_solver, flow_solver=cfg.flow_solver, implementation=cfg.kernel_impl,
                      models=models, in_shape=data.in_shape, discrete=cfg.use_discrete_o1m, spectra=cfg.spectra,
                      top=cfg.top, gradient_descent=cfg.gradient_descent, flow=cfg.flow)


def describe_model(model: AbstractModel) -> str:
    info = model.describe()
    opts = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("arch", "in_shape", "lrs") and v is not None)
    return f"{info['arch']} ({opts})"


def dry_run(cfg: SolveConfig) -> str:
    """What ``nth solve --dry-run`` prints: sizes and the memory plan of every stage; nothing is computed.

    Raises MemoryBudgetError (with the itemized plan) exactly when the real run would refuse.
    """
    cfg.validate()
    float64_if_asked(DTYPES[cfg.dtype])
    cfg = cfg.for_dtype()
    data = data_shape(cfg)
    model = abstract_model(cfg, data)
    plan = plan_run(cfg, data, model)
    head = (f"nth solve --p {cfg.p}: {describe_model(model)}, {num_params(model)} parameters, n = {data.n}, inputs "
            f"{data.in_shape}, {data.k} test inputs, {cfg.dtype}, device {jax.devices()[0].platform} x "
            f"{len(jax.local_devices())}" + (", K^(p) matrix-free" if cfg.matrix_free else "")
            + (f", {cfg.param} parametrization" if cfg.model is None and cfg.arch == "mlp" else ""))
    return head + "\n" + plan.describe()


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t


def infinite_kernels(cfg: SolveConfig, depth: int, X, Xt, outputs: int = 1) -> tuple[Array, Array | None]:
    """Kbar^(2)(X, X) and Kbar^(2)(X_test, X) of the configured MLP (docs/math.md section 5), in the dtype of X,
    over samples: Kbar^(2) times the identity on ``outputs`` (section 10).

    Kbar uses ``cfg.sigma_w``/``cfg.sigma_a`` as the weights' distribution (also with a weights file).
    """
    kw = dict(depth=depth, activation=cfg.activation, sigma_w=cfg.sigma_w, sigma_a=cfg.sigma_a, beta=cfg.beta,
              param=cfg.param, order=cfg.quadrature_order)
    eye = jnp.eye(outputs, dtype=X.dtype)
    on_samples = lambda K: K if outputs == 1 else jnp.kron(K, eye)  # noqa: E731  (sample s = a k + i)
    Kbar = on_samples(limiting_kernels(X, **kw).ntk.astype(X.dtype))
    return Kbar, None if Xt is None else on_samples(limiting_kernels(Xt, X, **kw).ntk.astype(X.dtype))


def resolved_config(cfg: SolveConfig, data: Dataset, model: AbstractModel, chunk: int, t_max: float,
                    seeds_together: int, out_shape: tuple[int, ...] = ()) -> dict[str, Any]:
    """The configuration a file records: every option with its defaults resolved (``outputs``: the outputs per
    input the model has), and the model's description."""
    info = model.describe()
    out = cfg.flat() | {"dg_method": cfg.resolved_dg_method, "outputs": math.prod(out_shape),
        "inf": cfg.use_inf, "dg": cfg.use_dg, "width": model.width, "depth": info.get("depth"), "n": data.n,
        "d": data.d, "in_shape": list(data.in_shape), "n_test": data.k, "num_params": num_params(model),
        "kernel_chunk": chunk, "normalization_applied": data.normalization, "t_max": float(t_max),
        "model_info": info, "arch_options": cfg.network.describe(), "seeds_together": seeds_together}
    if cfg.model is None and cfg.arch == "mlp":
        out["tp4"] = preset(cfg.param, info["depth"]).table_row()
    if cfg.model is not None:  # the built-in architecture options do not apply to the user's model
        out.update(arch="model", activation=None, beta=None, sigma_w=None, sigma_a=None, param=None, kernel_size=None,
                   quadrature_order=None)
    return out


def _stack(models: list[AbstractModel]) -> AbstractModel:
    """One model whose arrays (parameters and any other array leaves) carry a leading seed axis; everything else
    must agree between the seeds."""
    parts = [eqx.partition(m, eqx.is_array) for m in models]
    rest = [r for _, r in parts]
    if any(jax.tree_util.tree_structure(r) != jax.tree_util.tree_structure(rest[0]) for r in rest) or \
            any(jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(parts[0][0]) for a, _ in parts):
        raise ConfigError("the models of these seeds differ in structure; they cannot be computed together")
    return eqx.combine(jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[a for a, _ in parts]), rest[0])


def _pick(tree, i: int):
    return jax.tree_util.tree_map(lambda x: x[i] if eqx.is_array(x) else x, tree)


def solve_seeds(cfg: SolveConfig, seeds: list[int], *, progress: bool = False, devices=None,
                log: Callable[[str], None] | None = None) -> list[SolveResult]:
    """Every stage of a run for each seed in ``seeds`` as one computation (module docstring).

    Several seeds need a fixed horizon ``cfg.t_max`` (they share their save times), seeded weights and gradient
    flow (no ``lr``). ``devices``: None for every local device, an int count, or a list. The memory plan covers
    all seeds at once and refuses before any allocation.
    """
    say = log or (lambda s: None)
    cfg.validate()
    float64_if_asked(DTYPES[cfg.dtype])
    if cfg.adjustments():
        say(cfg.adjustments())
        cfg = cfg.for_dtype()
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds = {seeds!r} must be a non-empty list of distinct integers")
    B = len(seeds)
    if B > 1 and (cfg.t_max is None or cfg.weights is not None or cfg.gradient_descent or cfg.matrix_free):
        raise ConfigError("several seeds together need a fixed t_max, seeded weights (no --weights), gradient flow "
                          "(no --lr) and dense kernels (no --matrix-free); run them one at a time otherwise")
    devices = cfg.devices if devices is None else devices
    shape = data_shape(cfg)
    plan = plan_run(cfg, shape, models=B)  # every stage is planned (and refused) from sizes alone
    batches = None if cfg.batch_size is None else batch_schedule(shape.n, cfg.batch_size, cfg.steps, cfg.batch_seed)
    device_mesh(devices)  # a bad device count is refused before any work too
    data = load_data(cfg)
    dtype = DTYPES[cfg.dtype]
    loss = cfg.loss_fn
    X = jnp.asarray(data.X, dtype=dtype)
    Xt = None if data.k == 0 else jnp.asarray(data.X_test, dtype=dtype)
    for name, arr in (("X", X), ("X_test", Xt)):
        if arr is not None and not bool(jnp.isfinite(arr).all()):
            raise DataError(f"{data.source}: '{name}' overflows {cfg.dtype} (entries up to "
                            f"{float(np.max(np.abs(getattr(data, name)))):.3g}); rescale the data or use --dtype float64")
    models = [build_model(cfg, data, s) for s in seeds]
    model = models[0]
    out_shape = output_shape(model, data.in_shape, dtype)
    y = run_targets(cfg, data, out_shape)
    classes = data.labels is not None
    stacked = B > 1
    net = _stack(models) if stacked else model
    labels = [f"seed {s}" for s in seeds]
    wall: dict[str, float] = {}

    def timed(key, fn):  # wall time per seed
        out, t = _timed(fn)
        wall[key] = t / B
        return out

    if cfg.model is None and cfg.arch == "mlp":
        abc = preset(cfg.param, model.depth)
        param = f", {cfg.param} parametrization (r = {abc.r}, {abc.regime()})"
    else:
        param = ""
    say(f"network: {describe_model(model)}, {num_params(model)} parameters{param}; data: n = {data.n}, inputs "
        f"{data.in_shape}, {data.k} test points ({data.source}); loss {loss.describe()}; device: "
        f"{jax.devices()[0].platform}" + (f"; seeds {', '.join(map(str, seeds))} together" if stacked else ""))
    say(f"[1/4] kernels K^(2)..K^({cfg.p}) by forward mode ({plan.kernels.implementation}; batches of "
        f"{plan.kernels.chunk} direction tuples" + (f"; K^({cfg.p}) matrix-free)" if cfg.matrix_free else ")"))
    kw = dict(memory_budget=plan.budget, chunk=plan.kernels.chunk, progress=progress, matrix_free=cfg.matrix_free,
              devices=devices, implementation=cfg.kernel_impl, stacked=stacked)
    if Xt is None:
        ks, kt = timed("kernels", lambda: compute_kernels(net, X, cfg.p, **kw)), None
    else:  # the training and test kernels in one pass where the implementation allows it
        ks, kt = timed("kernels", lambda: kernels_and_test(net, X, Xt, cfg.p, **kw))
    apply = eqx.filter_vmap(lambda m, Z: m(Z), in_axes=(eqx.if_array(0), None)) if stacked else (lambda m, Z: m(Z))
    f0 = apply(net, X)
    ft0 = None if Xt is None else apply(net, Xt)
    rows = rows_for(cfg)
    inputs = RowInputs(cfg=cfg, loss=loss, y=y, ts=None, kernels=ks, test_kernels=kt, f0=f0, f0_test=ft0,
                       out_shape=out_shape, stacked=stacked, labels=labels, model=model, X=X, X_test=Xt, plan=plan,
                       devices=devices, progress=progress, say=say)
    for r in rows:  # the checks that can refuse a row run before the long solves
        r.prepare(inputs)
    if cfg.use_inf:  # Kbar^(2) (and its input checks) before the long solves; shared by every seed
        inputs = dataclasses.replace(inputs, kbar=infinite_kernels(cfg, model.depth, X, Xt, num_outputs(out_shape)))
    gd = None
    if cfg.gradient_descent:
        stable = stable_lr(ks[2], loss=loss, f0=f0, y=y, batch_size=cfg.batch_size)
        if cfg.lr_fraction is not None:  # the learning rate is a fraction of this network's stable step
            cfg = dataclasses.replace(cfg, lr=cfg.lr_fraction * stable)
        steps = np.unique(np.round(np.linspace(0, cfg.steps, cfg.num_times)).astype(np.int64))
        ts = jnp.asarray(cfg.lr * steps, dtype=dtype)
        t_max = cfg.lr * cfg.steps
        inputs = dataclasses.replace(inputs, cfg=cfg, steps=steps, batches=batches)
        say(f"[+] {'gradient descent' if batches is None else f'SGD on batches of {cfg.batch_size}'}: lr {cfg.lr:g} "
            f"({cfg.lr / stable:.3g} of the stable step {stable:.3g}), {cfg.steps} steps")
        gd = timed("gradient_descent", lambda: gradient_descent(model, X, y, cfg.lr, steps, X_test=Xt, loss=loss,
                                                                batches=batches, save_params=cfg.spectra))
    else:
        t_max = cfg.t_max if cfg.t_max is not None else default_horizon(ks[2], f0, y, fall=loss.horizon_fall,
                                                                        loss=loss)
        ts = jnp.linspace(0.0, t_max, cfg.num_times, dtype=dtype)
    inputs = dataclasses.replace(inputs, ts=ts)
    flow_settings = cfg.flow_settings(progress=progress and not stacked)
    if cfg.flow:
        say(f"[2/4] true gradient flow to t = {t_max:.4g} ({flow_settings.describe()})")
        flow = timed("gradient_flow", lambda: gradient_flow(net, X, y, ts, solver=flow_settings, X_test=Xt,
                                                            stacked=stacked, labels=labels, loss=loss,
                                                            save_params=cfg.spectra and gd is None))
    else:
        say("[2/4] true gradient flow skipped (--no-flow): gradient descent is the only reference")
        flow = None
    say(f"[3/4] truncated NTH, levels q = 2..{cfg.p} ({cfg.nth_solver})")
    solved = {r.label: timed(r.wall, lambda r=r: r.solve(inputs)) for r in rows if r.batched or not stacked}
    if cfg.use_inf:
        say("[+] m = inf: kernel gradient descent with the limiting NTK Kbar^(2) from the network's f(0)")
    if cfg.use_dg:
        say(f"[4/4] Dyer & Gur-Ari O(1/m) correction ({cfg.resolved_dg_method} form)")
    dense = lambda d: None if d is None else {r: k for r, k in d.items() if not isinstance(k, KernelOperator)}  # noqa: E731
    results = []
    for i, s in enumerate(seeds):
        pick = (lambda tree: _pick(tree, i)) if stacked else (lambda tree: tree)
        k_i, kt_i = pick(dense(ks)), pick(dense(kt))
        flow_i = pick_seed(flow, i) if stacked and flow is not None else flow
        w = dict(wall)
        pr = {}
        for r in rows:
            if stacked and r.batched:
                pr[r.label] = r.pick(solved[r.label], i)
            elif stacked:
                pr[r.label], w[r.wall] = _timed(lambda r=r: r.solve(inputs.pick(i, k_i, kt_i)))
            else:
                pr[r.label] = solved[r.label]
        measure = functools.partial(Measures.of, data=data, out_shape=out_shape, classes=classes)
        preds = {r.label: Prediction(r, pr[r.label], measure(pr[r.label], flow_i, gd, reference=(
                     gd if r.reference == "gd" or flow_i is None else flow_i))) for r in rows}
        spectra = None
        if cfg.spectra:  # along the reference's saved times; its weights are then let go
            trained = flow_i if gd is None else gd
            say(f"[+] spectra of the loss Hessian and the NTK at {len(trained.ts)} saved times"
                + (f" (seed {s})" if stacked else ""))
            spectra, w["spectra"] = _timed(lambda: spectra_along(cfg.replace(seed=s), trained.params, X, y, loss,
                                                                 memory_budget=plan.lanczos_budget,
                                                                 progress=progress,
                                                                 say=say))
            flow_i = None if flow_i is None else dataclasses.replace(flow_i, params=None)
            gd = None if gd is None else dataclasses.replace(gd, params=None)
        trained = gd if flow_i is None else flow_i
        loss_fall = float(trained.loss[0] / trained.loss[-1]) if float(trained.loss[-1]) > 0 else float("inf")
        config = resolved_config(dataclasses.replace(cfg, seed=s), data, models[i], plan.kernels.chunk, t_max, B,
                                 out_shape)
        as_np = lambda d: None if d is None else {r: np.asarray(k) for r, k in d.items()}  # noqa: E731
        res = SolveResult(config=config, data=data, f0=np.asarray(pick(f0)), kernels=as_np(k_i),
                          test_kernels=as_np(kt_i), flow=flow_i,
                          flow_measures=None if flow_i is None else measure(flow_i, None, None), gd=gd,
                          gd_measures=None if gd is None else measure(gd, flow_i, None), predictions=preds,
                          wall_times=w, loss_fall=loss_fall, spectra=spectra,
                          warnings=float32_warnings({k: p.measures for k, p in preds.items()}, models[i].width) if cfg.dtype == "float32" else [])
        for w_ in res.warnings:
            say("warning: " + w_)
        results.append(res)
    return results


def solve(cfg: SolveConfig, *, progress: bool = False, log: Callable[[str], None] | None = None) -> SolveResult:
    """One run of ``cfg`` (its seed): :func:`solve_seeds` with one seed. No file is written (see
    :func:`nth.run_solve`)."""
    return solve_seeds(cfg, [cfg.seed], progress=progress, log=log)[0]


def spectrum_at_init(cfg: SolveConfig, *, progress: bool = False) -> Spectrum:
    """The loss Hessian and the NTK of the network of ``cfg`` (seed ``cfg.seed``) at its initial weights, on its
    training data and targets under its loss (:func:`~nth.engine._spectrum.spectrum_of`; docs/math.md section
    11)."""
    cfg.validate()
    dtype = DTYPES[cfg.dtype]
    float64_if_asked(dtype)  # before the data become arrays
    data = load_data(cfg)
    X = jnp.asarray(data.X, dtype=dtype)
    model = build_model(cfg, data, cfg.seed)
    y = run_targets(cfg, data, output_shape(model, data.in_shape, dtype))
    return spectrum_of(cfg, model, X, y, cfg.loss_fn, progress=progress)


def sweep_errors(cfg: SolveConfig, widths: list[int], seeds: list[int], *, reference_check: bool = False,
                 log: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """Run :func:`solve` for every (width, seed) and collect errors against true gradient flow.

    Returns arrays of shape (W, S): ``"f_<label>"``, ``"K2_<label>"`` and, with test inputs, ``"test_<label>"``
    for every prediction label (p2..p{p}, dg); ``"dg_vs_p4"`` (max_t |f_dg - f_p4|/sqrt(n)) when both exist;
    ``"loss_fall"``; and, with ``reference_check``, ``"ref_diff"``: max_t |f_true - f_true'|/sqrt(n) between
    the flow at the configured tolerances and at 100x tighter ones (docs/math.md section 6: must sit 10x below
    the NTH errors it is compared with).
    """
    if not cfg.flow:
        raise ConfigError("sweep_errors measures against the true gradient flow, which flow=False skips; keep the "
                          "flow, or sweep with nth.run_sweep (errors against gradient descent)")
    out: dict[str, np.ndarray] = {}
    shape = (len(widths), len(seeds))

    def put(key, i, j, v):
        out.setdefault(key, np.zeros(shape))[i, j] = v

    for i, m in enumerate(widths):
        for j, s in enumerate(seeds):
            c = dataclasses.replace(cfg, width=m, seed=s)
            res = solve(c)
            for label, e in res.measures().items():
                put(f"f_{label}", i, j, e.max_f_error)
                put(f"K2_{label}", i, j, e.max_K2_error)
                if e.max_test_error is not None:
                    put(f"test_{label}", i, j, e.max_test_error)
            if res.dg_vs_p4 is not None:
                put("dg_vs_p4", i, j, res.dg_vs_p4)
            put("loss_fall", i, j, res.loss_fall)
            if reference_check:
                c = c.for_dtype()
                tight = dataclasses.replace(c.flow_settings(), rtol=c.rtol / 100, atol=c.atol / 100)
                model = build_model(c, res.data, s)
                ref = gradient_flow(model, jnp.asarray(res.data.X, dtype=DTYPES[c.dtype]),
                                    run_targets(c, res.data, res.out_shape), res.flow.ts, solver=tight, loss=c.loss_fn)
                put("ref_diff", i, j, f_error(ref.f, res.flow.f).max())
            if log:
                log(f"width {m} seed {s}: " + ", ".join(f"{label} {e.max_f_error:.2e}"
                                                          for label, e in res.measures().items()))
    return out
