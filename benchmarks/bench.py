"""The benchmark suite (``python benchmarks/bench.py``). Every number is a ratio against a baseline timed in the
same run.

Implementations of K^(2)..K^(4) compared on the same inputs (the problem of :func:`nth.default_problem`,
depth-2 tanh MLP, float64):

- ``structured``: nth's MLP path (rank-one directions, mixed partials of the structured K^(2));
- ``factored``: nth's generic engine on the same MLP (the factors of the linear maps found in the model's
  program; what every other architecture and the user's own model get);
- ``contraction`` and ``jvp``: nth's other generic implementations (closed forms from derivative tensors;
  nested JVPs through the forward pass with whole parameter Jacobians);
- (a) ``naive``: full flattened Jacobian + nested jax.jacfwd, as hand-written NTH code does (baselines.py);
- (b) ``previous``: nth's first implementation, nested jax.jvp along dense grad f pytrees (baselines.py);
- with ``--against REV``: ``structured`` of the nth at git revision REV (checked out into a temporary
  worktree and imported in its own process), so a change's speed is measured against its predecessor.

Each implementation runs in its own process, so that its peak resident memory (ru_maxrss, minus the
process's memory before the first kernel; on a GPU the device's peak_bytes_in_use) belongs to it alone; the
target case runs first in each process. Compile time is the first call minus the second (run) call. Then,
in one more process: the true gradient flow's cost against width, the matrix-free top level against the
dense one, batched seeds against the sequential loop, and float32 against float64 kernels.

Then the other architectures (nth's cnn on digit images, its resnet, and the user model of examples/my_model.py):
K^(2)..K^(4) by every generic implementation at one size, and the default one's cost against n and width; and
the cnn end to end (``nth solve --arch cnn --width 128 --p 4 --data digits``) with the kernels of ``jvp``, the
engine every model but the MLP had before ``factored``, against the default, each in its own process with its
peak resident memory.

Writes a markdown table (default results/BENCHMARKS.md) naming the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

TARGET = {"n": 16, "m": 512, "depth": 2, "p": 4}
N_SCALING = {"structured": (8, 16, 32), "factored": (8, 16, 32), "contraction": (8, 16), "jvp": (8, 16),
             "previous": (8, 16, 32), "naive": (8, 16), "at_rev": ()}
M_SCALING = {"structured": (256, 512, 1024, 2048), "factored": (256, 512, 1024, 2048),
             "contraction": (256, 512), "jvp": (256, 512, 1024), "previous": (256, 512, 1024, 2048),
             "naive": (256, 512), "at_rev": ()}
#: Other architectures: (base n, base width, n series and width series of the default implementation).
ARCHS = {"cnn": (8, 64, (4, 8, 16), (32, 64, 128, 256)), "resnet": (16, 256, (8, 16, 32), (128, 256, 512, 1024)),
         "user": (16, 256, (8, 16, 32), (128, 256, 512, 1024))}
GENERIC = ("factored", "contraction", "jvp")
#: The cnn end to end: the command of ``nth solve`` and the kernel implementations compared.
END_TO_END = ["solve", "--arch", "cnn", "--width", "128", "--p", "4", "--data", "digits"]
#: Timed calls of the target case; the run time is their minimum (structured vs at_rev needs it). The scaling
#: series time each case twice.
REPEATS = 5
FLOW_WIDTHS = (512, 1024, 2048)
SEED_WIDTHS = (512, 2048)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _device_peak_mb():
    import jax

    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # CPU backends have no memory stats
        return None
    v = stats.get("peak_bytes_in_use")
    return None if v is None else v / 2**20


def _timed(fn):
    import jax

    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t


def _kernel_impl(name: str):
    import nth

    if name in ("structured", "at_rev"):
        return lambda net, X, p: nth.kernels(net, X, p)
    if name in GENERIC:
        return lambda net, X, p: nth.kernels(net, X, p, implementation=name)
    from baselines import naive_kernels, nested_jvp_kernels

    if name == "previous":
        return lambda net, X, p: nested_jvp_kernels(net, X, p)
    return naive_kernels


def _problem(n: int, m: int, depth: int):
    import jax.numpy as jnp

    import nth

    X = jnp.asarray(nth.default_problem(n=n, d=8).X)
    return nth.init_mlp(0, 8, m, depth, "tanh"), X


def _child_kernels(name: str, outdir: str) -> list[dict]:
    """One implementation: the target case (with memory), then its n and m scaling series."""
    impl = _kernel_impl(name)
    rows = []
    cases = [(TARGET["n"], TARGET["m"])] + [(n, TARGET["m"]) for n in N_SCALING[name]] \
        + [(TARGET["n"], m) for m in M_SCALING[name]]
    seen = set()
    for n, m in cases:
        if (n, m) in seen:
            continue
        seen.add((n, m))
        net, X = _problem(n, m, TARGET["depth"])
        base = _rss_mb()
        ks, first = _timed(lambda: impl(net, X, TARGET["p"]))
        row = {"impl": name, "n": n, "m": m, "first_s": first}
        if name == "naive":
            # a second call would repeat n identical columns of K^(4) (minutes): time K^(2), K^(3) and one
            # compiled column instead
            from baselines import naive_column

            _, t23 = _timed(lambda: impl(net, X, 3))
            _, tcol = _timed(lambda: naive_column(net, X, TARGET["p"], 0))
            row["run_s"] = t23 + n * tcol
        else:
            row["run_s"] = min(_timed(lambda: impl(net, X, TARGET["p"]))[1] for _ in range(REPEATS if not rows else 2))
        if not rows:
            row["rss_mb"] = _rss_mb() - base
            row["device_peak_mb"] = _device_peak_mb()
            np.savez(os.path.join(outdir, f"{name}.npz"), **{f"K{r}": np.asarray(k) for r, k in ks.items()})
        rows.append(row)
    return rows


def _arch_problem(arch: str, n: int, m: int):
    """(model, X): nth's cnn on n digit images (8x8, classes 0 and 1), its resnet or the user model of
    examples/my_model.py on the default problem (d = 8), width m, depth 2."""
    import jax.numpy as jnp

    import nth

    if arch == "cnn":
        from nth.data import digits_problem

        X = jnp.asarray(digits_problem(per_class=-(-n // 2), classes=2, images=True).X[:n])
        return nth.init_cnn(0, (8, 8), m, 2), X
    X = jnp.asarray(nth.default_problem(n=n, d=8).X)
    if arch == "resnet":
        return nth.init_resnet(0, 8, m, 2), X
    from nth.models import build_user_model

    here = os.path.dirname(os.path.abspath(__file__))
    spec = os.path.join(here, "..", "examples", "my_model.py") + ":make_model"
    return nth.cast_model(build_user_model(spec, m, 0, in_shape=(8,)), jnp.float64), X


def _child_arch(arch: str) -> list[dict]:
    """K^(2)..K^(4) of one architecture by every generic implementation at the base size (with the largest
    relative difference from the default one), then the default's n and width series."""
    import nth

    n0, m0, ns, ms = ARCHS[arch]
    rows, ref = [], None
    for name in GENERIC:
        net, X = _arch_problem(arch, n0, m0)
        ks, first = _timed(lambda: _kernel_impl(name)(net, X, TARGET["p"]))
        run_s = _timed(lambda: _kernel_impl(name)(net, X, TARGET["p"]))[1]
        ref = ks if ref is None else ref
        diff = max(float(abs(ks[r] - ref[r]).max() / abs(ref[r]).max()) for r in ks)
        rows.append({"arch": arch, "impl": name, "n": n0, "m": m0, "first_s": first, "run_s": run_s, "diff": diff,
                     "auto": nth.kernel.implementation(net).name})
    for n, m in [(n, m0) for n in ns] + [(n0, m) for m in ms]:
        if (n, m) == (n0, m0):
            continue
        net, X = _arch_problem(arch, n, m)
        _timed(lambda: _kernel_impl(GENERIC[0])(net, X, TARGET["p"]))
        rows.append({"arch": arch, "impl": GENERIC[0], "n": n, "m": m,
                     "run_s": _timed(lambda: _kernel_impl(GENERIC[0])(net, X, TARGET["p"]))[1]})
    return rows


def _child_end_to_end(impl: str, outdir: str) -> list[dict]:
    """``nth solve`` of END_TO_END with the kernels of ``impl``, in this process: wall time and peak resident
    memory."""
    from nth.cli import main as nth_main

    out = os.path.join(outdir, f"cnn_{impl}.h5")
    t = time.perf_counter()
    rc = nth_main(END_TO_END + ["--kernel-impl", impl, "--out", out, "--force"])
    return [{"impl": impl, "rc": rc, "wall_s": time.perf_counter() - t, "peak_mb": _rss_mb()}]


def _child_pipeline() -> list[dict]:
    import jax.numpy as jnp

    import nth
    from nth import SolveConfig
    from nth import solve as run_solve
    from nth import solve_seeds as run_solve_seeds

    rows = []
    data = nth.default_problem(n=16, d=8)
    X, y = jnp.asarray(data.X), jnp.asarray(data.y)
    ts = jnp.linspace(0.0, 20.0, 11)
    for m in FLOW_WIDTHS:
        net = nth.init_mlp(0, 8, m, 2, "tanh")
        sol, first = _timed(lambda: nth.gradient_flow(net, X, y, ts))
        _, run = _timed(lambda: nth.gradient_flow(net, X, y, ts))
        rows.append({"case": "flow", "m": m, "first_s": first, "run_s": run, "steps": sol.stats.get("num_steps")})
    # matrix-free top level against the dense one, p = 4, n = 16, m = 512
    net, X = _problem(16, 512, 2)
    f0 = net(X)
    yy = jnp.asarray(nth.default_problem(n=16, d=8).y)
    for mf in (False, True):
        ks, tk = _timed(lambda: nth.kernels(net, X, 4, matrix_free=mf))
        sol, first = _timed(lambda: nth.truncated_nth(ks, f0, yy, ts, p=4))
        _, run = _timed(lambda: nth.truncated_nth(ks, f0, yy, ts, p=4))
        rows.append({"case": "matrix_free" if mf else "dense", "kernels_s": tk, "first_s": first, "run_s": run,
                     "f": np.asarray(sol.f).tolist(), "steps": sol.stats.get("num_steps"),
                     "stored_MiB": sum(np.asarray(k).nbytes for k in ks.values()
                                       if not isinstance(k, nth.KernelOperator)) / 2**20})
    # seeds: standard sweep cells (depth 1, n 8, p 4, t 20, 4 test points), loop vs one batch
    for m in SEED_WIDTHS:
        cfg = SolveConfig(p=4, width=m, depth=1, n=8, d=4, t_max=20.0, num_times=11)
        seeds = [0, 1, 2, 3]
        run_solve(cfg)  # compile the per-seed path
        _, loop = _timed(lambda: [run_solve(dataclasses.replace(cfg, seed=s)) for s in seeds])
        run_solve_seeds(cfg, seeds)  # compile the batched path
        _, batch = _timed(lambda: run_solve_seeds(cfg, seeds))
        rows.append({"case": "seeds", "m": m, "seeds": len(seeds), "loop_s": loop, "batch_s": batch})
    # float32 against float64 kernels (target size)
    import jax

    net, X = _problem(TARGET["n"], TARGET["m"], TARGET["depth"])
    for dt in ("float64", "float32"):
        nt = jax.tree_util.tree_map(lambda a: a.astype(dt), net)
        nth.kernels(nt, X.astype(dt), 4)
        _, run = _timed(lambda: nth.kernels(nt, X.astype(dt), 4))
        rows.append({"case": f"kernels_{dt}", "run_s": run})
    return rows


def _spawn(args: list[str], pythonpath: str | None = None) -> list[dict]:
    env = dict(os.environ)
    if pythonpath:  # import nth from there (a worktree of another revision)
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)] + args, capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _exponent(xs, ts) -> float:
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ts, float)), 1)[0])


def _machine() -> str:
    import jax

    dev = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
            cpu = names[0] if names else cpu
    except OSError:
        pass
    return (f"{dev.platform} ({dev.device_kind}), {len(jax.devices())} device(s); host CPU {cpu}, "
            f"{os.cpu_count()} cores; jax {jax.__version__}, Python {platform.python_version()}")


def _worktree(rev: str, where: str) -> str:
    """A checkout of ``rev`` under ``where`` (git worktree, detached); its path."""
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__)), check=True).stdout.strip()
    path = os.path.join(where, "rev")
    subprocess.run(["git", "worktree", "add", "--detach", path, rev], cwd=root, check=True, capture_output=True)
    return path


def run(out: str, against: str | None = None, end_to_end: bool = True) -> str:
    t0 = time.perf_counter()
    impls = ("structured",) + GENERIC + ("previous", "naive")
    with tempfile.TemporaryDirectory() as tmp:
        kern = {name: _spawn(["--child", name, tmp]) for name in impls}
        arch = {a: _spawn(["--child", "arch", tmp, a]) for a in ARCHS}
        if against:
            tree = _worktree(against, tmp)
            try:
                kern["at_rev"] = _spawn(["--child", "at_rev", tmp], pythonpath=tree)
                kern["structured_again"] = _spawn(["--child", "structured", tmp])  # the pair brackets at_rev
                e2e = _end_to_end_pair(tmp, tree) if end_to_end else []
            finally:
                _remove_worktree(tree)
        else:
            e2e = _end_to_end_pair(tmp, None) if end_to_end else []
        pipe = _spawn(["--child", "pipeline", tmp])
        ref = np.load(os.path.join(tmp, "naive.npz"))
        diffs = {}
        for name in ("structured",) + GENERIC + ("previous",) + (("at_rev",) if against else ()):
            got = np.load(os.path.join(tmp, f"{name}.npz"))
            diffs[name] = max(float(np.abs(got[k] - ref[k]).max() / np.abs(ref[k]).max()) for k in ref.files)
    tgt = {name: rows[0] for name, rows in kern.items()}
    lines = ["# nth benchmarks", "", f"Machine: {_machine()}.", "",
             f"Generated by `python benchmarks/bench.py{' --against ' + against if against else ''}"
             f"{'' if end_to_end else ' --no-end-to-end'}` in {time.perf_counter() - t0:.0f} s. All "
             "times in seconds, float64 unless stated; ratios are against baselines timed in the same run.", "",
             f"## K^(2)..K^(4) at n = {TARGET['n']}, m = {TARGET['m']}, depth {TARGET['depth']} (tanh, d = 8)", "",
             "| implementation | compile [s] | run [s] | speed-up vs (a) naive | vs (b) previous | peak memory [MiB] "
             "| max rel. diff vs (a) |", "|---|---|---|---|---|---|---|"]
    names = {"structured": "nth structured (MLP path)", "factored": "nth factored (generic engine, default)",
             "contraction": "nth contraction (generic)", "jvp": "nth jvp (generic, nested JVPs)",
             "previous": "(b) previous nth", "naive": "(a) naive jacrev/jacfwd"}
    for name in impls:
        r = tgt[name]
        comp = r["first_s"] - r["run_s"]
        mem = r["device_peak_mb"] if r.get("device_peak_mb") is not None else r["rss_mb"]
        lines.append(f"| {names[name]} | {comp:.2f} | {r['run_s']:.3f} | {tgt['naive']['run_s'] / r['run_s']:.1f}x | "
                     f"{tgt['previous']['run_s'] / r['run_s']:.2f}x | {mem:.0f} | "
                     f"{'-' if name == 'naive' else f'{diffs[name]:.1e}'} |")
    lines += ["", "Peak memory: resident-set growth of the implementation's own process during the call (device "
              "peak on a GPU). The naive run time is its compiled K^(2), K^(3) plus n times one compiled column of "
              "K^(4) (repeating its whole K^(4) would take minutes).", "",
              "## Cost against n and m (run time, compiled; fitted exponent of time ~ n^a, m^b)", "",
              "| implementation | n series (m = 512): times | a | m series (n = 16): times | b |", "|---|---|---|---|---|"]
    for name in impls:
        rows = kern[name]
        ns = sorted({r["n"]: r["run_s"] for r in rows if r["m"] == TARGET["m"]}.items())
        ms = sorted({r["m"]: r["run_s"] for r in rows if r["n"] == TARGET["n"]}.items())
        fmt = lambda s: ", ".join(f"{k}: {v:.3g}" for k, v in s)  # noqa: E731
        lines.append(f"| {names[name]} | {fmt(ns)} | {_exponent(*zip(*ns)):.2f} | {fmt(ms)} | "
                     f"{_exponent(*zip(*ms)):.2f} |")
    gen = {name: tgt[name]["run_s"] / tgt["structured"]["run_s"] for name in GENERIC}
    lines += ["", f"Generic engine on the MLP at the target size: factored {gen['factored']:.1f}x the structured "
              f"path's run time, contraction {gen['contraction']:.1f}x, jvp {gen['jvp']:.1f}x (jvp forms the "
              "parameter Jacobians inside every nested JVP; factored finds the MLP's rank-one factors in its "
              "program)."]
    lines += _arch_lines(arch) + (_end_to_end_lines(e2e, against) if e2e else _kept_end_to_end(out))
    if against:
        now = min(tgt["structured"]["run_s"], tgt["structured_again"]["run_s"])
        then = tgt["at_rev"]["run_s"]
        lines += ["", f"## Structured K^(2)..K^(4) against revision {against} (same machine, same run)", "",
                  "| code | run [s] (min of " + str(REPEATS) + ") | max rel. diff vs (a) |", "|---|---|---|",
                  f"| this revision (two processes, before and after) | {tgt['structured']['run_s']:.3f}, "
                  f"{tgt['structured_again']['run_s']:.3f} | {diffs['structured']:.1e} |",
                  f"| {against} | {then:.3f} | {diffs['at_rev']:.1e} |", "",
                  f"This revision takes {now / then:.2f}x the time of {against} (best of each)."]
    flow = [r for r in pipe if r["case"] == "flow"]
    lines += ["", "## True gradient flow (Dopri8, rtol 1e-10, n = 16, depth 2, t = 20)", "",
              "| width | compile [s] | run [s] | steps | run per step [ms] |", "|---|---|---|---|---|"]
    for r in flow:
        lines.append(f"| {r['m']} | {r['first_s'] - r['run_s']:.2f} | {r['run_s']:.2f} | {r['steps']} | "
                     f"{1e3 * r['run_s'] / r['steps']:.1f} |")
    lines.append(f"\nFitted: run time ~ m^{_exponent([r['m'] for r in flow], [r['run_s'] for r in flow]):.2f}.")
    dense, mf = (next(r for r in pipe if r["case"] == c) for c in ("dense", "matrix_free"))
    fdiff = float(np.abs(np.asarray(dense["f"]) - np.asarray(mf["f"])).max())
    lines += ["", "## Matrix-free top level (p = 4, n = 16, m = 512, depth 2, t = 20)", "",
              "| top level | kernels [s] | NTH compile [s] | NTH run [s] | steps | kernels stored [MiB] |",
              "|---|---|---|---|---|---|"]
    for r in (dense, mf):
        lines.append(f"| {r['case'].replace('_', '-')} | {r['kernels_s']:.2f} | {r['first_s'] - r['run_s']:.2f} | "
                     f"{r['run_s']:.2f} | {r['steps']} | {r['stored_MiB']:.3f} |")
    lines.append(f"\nmax |f_dense - f_matrix-free| = {fdiff:.1e}; the matrix-free solve costs "
                 f"{mf['run_s'] / dense['run_s']:.0f}x the dense one per solve and stores "
                 f"{dense['stored_MiB'] / max(mf['stored_MiB'], 1e-12):.0f}x less.")
    seeds = [r for r in pipe if r["case"] == "seeds"]
    lines += ["", f"## Seeds of a sweep cell (depth 1, n = 8, p = 4, DG, 4 test points, t = 20, {seeds[0]['seeds']} "
              "seeds, compiled)", "", "| width | sequential loop (baseline) [s] | runs per hour | one vmapped batch "
              "(`--batch-seeds`) [s] | runs per hour | ratio |", "|---|---|---|---|---|---|"]
    for sd in seeds:
        per_h = lambda s, sd=sd: 3600 * sd["seeds"] / s  # noqa: E731
        lines.append(f"| {sd['m']} | {sd['loop_s']:.2f} | {per_h(sd['loop_s']):.0f} | {sd['batch_s']:.2f} | "
                     f"{per_h(sd['batch_s']):.0f} | {sd['loop_s'] / sd['batch_s']:.2f}x |")
    k64, k32 = (next(r for r in pipe if r["case"] == f"kernels_{d}") for d in ("float64", "float32"))
    lines += ["", "## float32", "", f"K^(2)..K^(4) at the target size: float64 {k64['run_s']:.3f} s, float32 "
              f"{k32['run_s']:.3f} s ({k64['run_s'] / k32['run_s']:.2f}x). The error floor float32 puts under "
              "error-vs-width curves is in results/float32_floor.txt.", ""]
    text = "\n".join(lines)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as fh:
            fh.write(text)
    return text


def _arch_lines(arch: dict[str, list[dict]]) -> list[str]:
    lines = ["", "## Other architectures: K^(2)..K^(4) by every generic implementation (depth 2, float64)", "",
             "cnn: nth's cnn on 8x8 digit images (classes 0 and 1); resnet: nth's resnet on the default problem "
             "(d = 8); user: the model of examples/my_model.py (eqx.nn.Linear layers with biases, softplus).", "",
             "| model | n | width | implementation | compile [s] | run [s] | vs jvp | max rel. diff vs factored |",
             "|---|---|---|---|---|---|---|---|"]
    for a, rows in arch.items():
        base = {r["impl"]: r for r in rows if "diff" in r}
        for name in GENERIC:
            r = base[name]
            lines.append(f"| {a} | {r['n']} | {r['m']} | {name}{' (auto)' if r['auto'] == name else ''} | "
                         f"{r['first_s'] - r['run_s']:.2f} | {r['run_s']:.3f} | "
                         f"{base['jvp']['run_s'] / r['run_s']:.1f}x | {r['diff']:.1e} |")
    lines += ["", "Cost of the default (factored) against n and width (run time, compiled; fitted exponents of "
              "time ~ n^a, m^b):", "", "| model | n series: times | a | width series: times | b |", "|---|---|---|---|---|"]
    fmt = lambda s: ", ".join(f"{k}: {v:.3g}" for k, v in s)  # noqa: E731
    for a, rows in arch.items():
        n0, m0 = ARCHS[a][:2]
        own = [r for r in rows if r["impl"] == GENERIC[0]]
        ns = sorted({r["n"]: r["run_s"] for r in own if r["m"] == m0}.items())
        ms = sorted({r["m"]: r["run_s"] for r in own if r["n"] == n0}.items())
        lines.append(f"| {a} | {fmt(ns)} (width {m0}) | {_exponent(*zip(*ns)):.2f} | {fmt(ms)} (n = {n0}) | "
                     f"{_exponent(*zip(*ms)):.2f} |")
    return lines


def _remove_worktree(tree: str) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", tree], capture_output=True,
                   cwd=os.path.dirname(os.path.abspath(__file__)))


def _end_to_end_pair(tmp: str, tree: str | None) -> list[dict]:
    """(before, after) of END_TO_END, each in its own process: before is the default of the revision checked out
    at ``tree`` (the code as it was: kernels, model and flow), or this revision with ``--kernel-impl jvp`` when
    there is none; after is this revision's default."""
    before = _spawn(["--child", "e2e", tmp, "auto"], pythonpath=tree)[0] if tree else \
        _spawn(["--child", "e2e", tmp, "jvp"])[0]
    return [before, _spawn(["--child", "e2e", tmp, "auto"])[0]]


def _end_to_end_lines(e2e: list[dict], against: str | None) -> list[str]:
    if not e2e:
        return []
    before, after = e2e
    lines = ["", f"## The cnn end to end: `nth {' '.join(END_TO_END)}`", "",
             "n = 20 images, 4 test images, every row of the default table; each in its own process.", "",
             "| code | wall time [s] | peak resident memory [MiB] | exit status |", "|---|---|---|---|"]
    first = f"revision {against}, its default" if against else "this revision, `--kernel-impl jvp`"
    for r, label in ((before, first), (after, "this revision, default (factored kernels)")):
        lines.append(f"| {label} | {r['wall_s']:.0f} | {r['peak_mb']:.0f} | {r['rc']} |")
    lines += ["", f"This revision's default is {before['wall_s'] / after['wall_s']:.1f}x faster end to end."]
    return lines


def _split_end_to_end(text: str) -> tuple[str, str, str]:
    """(before, the cnn end-to-end section, after) of a benchmark file's text; the section is empty if absent."""
    head, sep, rest = text.partition("\n## The cnn end to end")
    if not sep:
        return text, "", ""
    cut = rest.find("\n## ")
    return head, sep + (rest if cut < 0 else rest[:cut]), "" if cut < 0 else rest[cut:]


def _kept_end_to_end(out: str) -> list[str]:
    """The end-to-end section already in ``out`` (its provenance line included), kept by a run without it."""
    section = _split_end_to_end(open(out).read())[1] if out and os.path.exists(out) else ""
    return section.rstrip("\n").split("\n") if section else []


def run_end_to_end(out: str, against: str | None) -> str:
    """Only the cnn end-to-end pair; its section of ``out`` (if the file exists) is replaced, the rest kept."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tree = _worktree(against, tmp) if against else None
        try:
            e2e = _end_to_end_pair(tmp, tree)
        finally:
            if tree:
                _remove_worktree(tree)
    section = _end_to_end_lines(e2e, against) + [
        "", f"(This section by `python benchmarks/bench.py --end-to-end-only"
        f"{' --against ' + against if against else ''}` in {time.perf_counter() - t0:.0f} s, on {_machine()}.)"]
    text = "\n".join(section)
    if out:
        old = open(out).read() if os.path.exists(out) else ""
        head, _, tail = _split_end_to_end(old)
        with open(out, "w") as fh:
            fh.write(head.rstrip("\n") + "\n" + text + ("\n" + tail if tail else "\n"))
    return text


def _child_main(argv: list[str]) -> None:
    import nth

    nth.enable_float64()  # inputs are made before the first model (whose init would enable it)

    kind, outdir = argv[0], argv[1]
    if kind == "pipeline":
        rows = _child_pipeline()
    elif kind == "arch":
        rows = _child_arch(argv[2])
    elif kind == "e2e":
        rows = _child_end_to_end(argv[2], outdir)
    else:
        rows = _child_kernels(kind, outdir)
    print(json.dumps(rows))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _child_main(argv[1:])
        return 0
    ap = argparse.ArgumentParser(prog="benchmarks/bench.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/BENCHMARKS.md", help="markdown table to write ('' for none)")
    ap.add_argument("--against", help="also time the structured kernels, and the cnn end to end, of this git "
                    "revision (e.g. a commit hash)")
    ap.add_argument("--no-end-to-end", action="store_true", help="skip the cnn end to end (about 100 minutes on a "
                    "2-core CPU, most of it the code before) and keep the section --out already has")
    ap.add_argument("--end-to-end-only", action="store_true", help="time only the cnn end to end (before: the "
                    "default of --against REV, else --kernel-impl jvp) and replace that section of --out")
    a = ap.parse_args(argv)
    if a.end_to_end_only:
        print(run_end_to_end(a.out, a.against))
        return 0
    print(run(a.out, a.against, not a.no_end_to_end))
    return 0


if __name__ == "__main__":
    sys.exit(main())
