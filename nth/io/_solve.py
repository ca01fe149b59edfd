"""``nth solve`` as a library call: check the output path, run the engine, write the file atomically, and the
table the command prints."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from ..engine import Measures, SolveConfig, SolveResult, solve
from ..engine._config import DEFAULT_WIDTH
from ._files import check_output_path, writer_lock
from ._hdf5 import write_h5
from ._schema import axes_for, solve_file


def write_result(result: SolveResult, out: str | os.PathLike, *, force: bool = False,
                 save_kernels: bool = False) -> str:
    """Write a run to ``out`` atomically in the schema of :mod:`nth.io._schema`."""
    ds, attrs = solve_file(result, save_kernels=save_kernels)
    return write_h5(out, ds, attrs, force=force, axes=axes_for(result))


def run_solve(cfg: SolveConfig, out: str | os.PathLike | None = None, *, force: bool = False,
              progress: bool = False, log: Callable[[str], None] | None = None) -> SolveResult:
    """Run every stage of ``cfg`` (:func:`nth.engine.solve`) and write ``out``. The output path is checked before
    any computation (an existing file is refused unless ``force``, an unwritable one always), the run holds the
    file's writer lock throughout, and the file is written atomically at the end (:mod:`nth.io._files`)."""
    if out is None:
        return solve(cfg, progress=progress, log=log)
    out = check_output_path(out, force)
    with writer_lock(out, "nth solve"):  # the run is the file's only writer from now until it is written
        result = solve(cfg, progress=progress, log=log)
        t = time.perf_counter()
        result.path = write_result(result, out, force=force, save_kernels=cfg.save_kernels)
        result.wall_times["write"] = time.perf_counter() - t
    return result


#: The classifier's columns of the table (docs/math.md section 10): key in the measures, heading, width.
_CLASS_COLUMNS = (("final_loss", "loss", 10), ("accuracy", "acc", 6), ("test_accuracy", "test acc", 8),
                  ("disagreement", "disagree", 8), ("test_disagreement", "test dis.", 9))


def format_table(result: SolveResult) -> str:
    """The per-prediction summary ``nth solve`` prints: errors against true gradient flow (and, with a learning
    rate, against gradient descent, the reference of the discrete-time rows d-p2 and d-o1m; a run that skips the
    flow has gradient descent as its only reference), and stage wall times; for a classifier (data with
    classes), also the training loss, the accuracies and the rate at which each prediction's decided class
    disagrees with its reference's, at the last saved time."""
    w = result.wall_times
    flow = result.flow is not None
    trained = result.trained
    test = trained.f_test is not None
    gd = result.gd is not None and flow  # the columns against gradient descent beside those against the flow
    ref = "true" if flow else "gd"
    measures = [m.as_dict() for m in [result.flow_measures, *result.measures().values()] if m is not None]
    cls = [c for c in _CLASS_COLUMNS if (result.flow_measures or result.gd_measures).accuracy is not None
           and any(c[0] in m for m in measures)]
    head = f"{'level':>7} {f'max_t |f-f_{ref}|/sqrt(n)':>26} {f'max |K2-K2_{ref}|':>18}"
    tg = test and gd
    head += f" {'test error':>11}" * test + f" {'f vs GD':>10}" * gd + f" {'test vs GD':>11}" * tg
    head += "".join(f" {h:>{n}}" for _, h, n in cls) + f" {'wall [s]':>9}"

    def extra(m: Measures):
        m = m.as_dict()
        return "".join(f" {m[k]:>{n}.3g}" if k in m else f" {'':>{n}}" for k, _, n in cls)

    def nan(v: float | None) -> float:
        return float("nan") if v is None else v

    lines = [head]
    for r in result.rows:
        e = result.predictions[r.label].measures
        main = (e.max_f_error, e.max_K2_error, e.max_test_error) if flow else (
            e.max_f_error_gd, e.max_K2_error_gd, e.max_test_error_gd)
        row = f"{r.name:>7} {main[0]:>26.3e} {main[1]:>18.3e}"
        row += f" {nan(main[2]):>11.3e}" * test
        row += f" {nan(e.max_f_error_gd):>10.3e}" * gd
        row += f" {nan(e.max_test_error_gd):>11.3e}" * tg
        lines.append(row + extra(e) + f" {w[r.wall]:>9.2f}")
    if gd:
        e = result.gd_measures
        row = f"{'gd':>7} {e.max_f_error:>26.3e} {e.max_K2_error:>18.3e}"
        row += f" {nan(e.max_test_error):>11.3e}" * test + f" {'(reference)':>10}" + f" {'':>11}" * tg
        lines.append(row + extra(e) + f" {w['gradient_descent']:>9.2f}")
    reference = (result.flow_measures, w["gradient_flow"]) if flow else (result.gd_measures, w["gradient_descent"])
    lines.append(f"{ref:>7} {'(reference)':>26} {'':>18}" + f" {'':>11}" * test + f" {'':>10}" * gd
                 + f" {'':>11}" * tg + extra(reference[0]) + f" {reference[1]:>9.2f}")
    lines.append(f"kernels K^(2)..K^({result.config['p']})"
                 + (" at the training and test inputs" if result.test_kernels is not None else "")
                 + f": {w['kernels']:.2f} s"
                 + (f"; write: {w['write']:.2f} s" if "write" in w else ""))
    lines.append(f"training loss fell {result.loss_fall:.3g}-fold over t in [0, {result.config['t_max']:.4g}] "
                 f"({result.config['loss']}: {float(trained.loss[0]):.3e} -> {float(trained.loss[-1]):.3e}"
                 + ("" if flow else ", gradient descent") + ")")
    lines += [f"warning: {w}" for w in result.warnings]
    if result.path:
        lines.append(f"wrote {result.path}")
    return "\n".join(lines)


def default_out_path(cfg: SolveConfig) -> str:
    """results/solve_p{p}_{arch}_m{width}_H{depth}_{activation}_s{seed}_{UTC time}.h5: a new name for every run."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    if cfg.model is not None:
        name = f"solve_p{cfg.p}_model_m{cfg.width or DEFAULT_WIDTH}_s{cfg.seed}_{stamp}.h5"
    else:
        width = cfg.width or ("file" if cfg.weights else DEFAULT_WIDTH)
        depth = cfg.depth or ("file" if cfg.weights else cfg.network.resolved_depth)
        arch = "" if cfg.arch == "mlp" else f"{cfg.arch}_"
        name = f"solve_p{cfg.p}_{arch}m{width}_H{depth}_{cfg.activation}_s{cfg.seed}_{stamp}.h5"
    return os.path.join("results", name)


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
