"""Everything that defines a run, checked before any work: :class:`SolveConfig`, made of a model, a data, a training
and a solver part.

A run is one model (a built-in architecture or the user's ``make_model``, :class:`~nth.models.ModelSpec`) on
one dataset, its kernels K^(2)..K^(p), the truncated NTH at every level q = 2..p, the DG correction, the
m = inf row where it exists, the true gradient flow and, with a learning rate, gradient descent. The CLI
only parses arguments into a SolveConfig.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from .._composed import Composed, part
from ..checks import check_seed
from ..data import NORMALIZATIONS
from ..dynamics import DG_METHODS, SolverSettings, check_limit_options
from ..errors import ConfigError
from ..kernel import IMPLEMENTATIONS, check_infinite_options
from ..losses import MSE, AbstractLoss, CrossEntropy, loss_from_spec
from ..models import DEFAULT_ORDER, ModelSpec

DTYPES = {"float64": jnp.float64, "float32": jnp.float32}
DEFAULT_WIDTH, DEFAULT_N, DEFAULT_D, DEFAULT_N_TEST = 1024, 16, 8, 4
#: float32 cannot resolve relative changes below its epsilon (1.2e-7): tolerances are raised to these.
FLOAT32_MIN_RTOL, FLOAT32_MIN_ATOL = 1e-6, 1e-8
RELU_RTOL, RELU_ATOL, RELU_MAX_STEPS = 1e-6, 1e-8, 1_000_000


@dataclasses.dataclass(frozen=True)
class ProblemSpec:
    """The data part of a run: ``data`` (None: the built-in problem of ``n`` inputs of dimension ``d``;
    ``"digits"``: ``digits_per_class`` images of each of the digits 0..``classes``-1; or an ``.npz`` file), the
    ``n_test`` test inputs of a built-in problem, the ``data_seed`` of the built-in draws and the inputs'
    ``normalization``."""

    data: str | None = None
    n: int | None = None
    d: int | None = None
    n_test: int | None = None
    data_seed: int = 0
    normalization: str = "sphere"
    digits_per_class: int = 10
    classes: int = 2

    def validate(self) -> None:
        check_seed("data_seed", self.data_seed)
        for name in ("n", "d"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ConfigError(f"{name} = {v!r} must be a positive integer")
        if self.data is not None and (self.n is not None or self.d is not None):
            raise ConfigError("n and d are read from the data; do not pass --n/--d together with --data "
                              "(for digits, set the size with --digits-per-class)")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization = {self.normalization!r}; accepted: {', '.join(NORMALIZATIONS)}")
        if self.classes != 2:
            if not isinstance(self.classes, int) or isinstance(self.classes, bool) or not 2 <= self.classes <= 10:
                raise ConfigError(f"classes = {self.classes!r} must be an integer 2..10 (the digits 0..C-1)")
            if self.data != "digits":
                raise ConfigError("--classes C chooses the digits 0..C-1 of --data digits; other data carry their own "
                                  "labels")
        builtin = self.data in (None, "digits")
        if self.n_test is not None and (not builtin or not isinstance(self.n_test, int) or self.n_test < 0):
            raise ConfigError(f"n_test = {self.n_test!r}: a non-negative integer, for the built-in problems only "
                              "(with --data FILE, test inputs come from X_test in the file)")
        if not isinstance(self.digits_per_class, int) or self.digits_per_class < 1:
            raise ConfigError(f"digits_per_class = {self.digits_per_class!r} must be a positive integer")

    def sizes(self, images: bool) -> dict:
        """The keyword arguments of :func:`nth.data.load_problem` and :func:`nth.data.problem_shape` but the source
        and seed (defaults resolved; ``images``: digits as 8x8 images)."""
        return dict(n=self.n or DEFAULT_N, d=self.d or DEFAULT_D,
                    n_test=DEFAULT_N_TEST if self.n_test is None else self.n_test,
                    digits_per_class=self.digits_per_class, images=images, classes=self.classes)


@dataclasses.dataclass(frozen=True)
class TrainingSpec:
    """The training part of a run: the ``loss`` (``mse``, ``logistic``, ``cross-entropy`` or ``FILE.py:fn``;
    docs/math.md section 10); gradient flow to ``t_max`` (None: the loss's horizon rule) or, with ``lr`` or
    ``lr_fraction`` (a fraction of the stable step) and ``steps``, gradient descent: full-batch, or with
    ``batch_size`` B stochastic gradient descent on the batches of :func:`nth.batch_schedule` (epochs of a
    permutation from ``batch_seed``); ``num_times`` saved times. With gradient descent, ``flow`` False skips the
    true gradient flow: gradient descent is then the only reference (for a non-smooth activation such as relu,
    whose flow makes an adaptive solver take tiny steps at every kink)."""

    loss: str = "mse"
    t_max: float | None = None
    lr: float | None = None
    lr_fraction: float | None = None
    steps: int | None = None
    batch_size: int | None = None
    batch_seed: int = 0
    num_times: int = 41
    flow: bool = True

    @property
    def loss_fn(self) -> AbstractLoss:
        """The loss object of ``loss`` (:func:`nth.loss_from_spec`)."""
        return loss_from_spec(self.loss)

    @property
    def gradient_descent(self) -> bool:
        """Whether the run trains by gradient descent (``lr`` or ``lr_fraction`` with ``steps``)."""
        return self.steps is not None

    def validate(self) -> None:
        self.loss_fn  # an unknown name or an unloadable FILE.py:fn is refused here
        if self.t_max is not None and not (isinstance(self.t_max, (int, float)) and math.isfinite(self.t_max)
                                           and self.t_max > 0):
            raise ConfigError(f"t_max = {self.t_max!r} must be a finite positive time")
        if not isinstance(self.num_times, int) or self.num_times < 2:
            raise ConfigError(f"num_times = {self.num_times!r} must be an integer >= 2")
        if self.lr is not None and self.lr_fraction is not None:
            raise ConfigError("give the learning rate once: lr (--lr ETA) or lr_fraction (--lr-fraction F, a fraction of "
                              "the stable step 2n / lambda_max(K^(2)(0)))")
        if (self.lr is None and self.lr_fraction is None) != (self.steps is None):
            raise ConfigError("finite learning rate needs both lr and steps (--lr ETA --steps S, or --lr-fraction F "
                              "--steps S)")
        if self.lr_fraction is not None and not (isinstance(self.lr_fraction, (int, float))
                                                 and math.isfinite(self.lr_fraction) and 0 < self.lr_fraction < 1):
            raise ConfigError(f"lr_fraction = {self.lr_fraction!r} must be in (0, 1): a fraction of the stable step "
                              "2n / lambda_max(K^(2)(0)) (gradient descent diverges beyond 1)")
        if self.lr is not None or self.lr_fraction is not None:
            if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
                raise ConfigError(f"lr = {self.lr!r} must be a finite positive learning rate")
            if not isinstance(self.steps, int) or self.steps < 1:
                raise ConfigError(f"steps = {self.steps!r} must be a positive integer")
            if self.t_max is not None:
                raise ConfigError("with --lr/--steps the horizon is t_max = lr * steps; do not pass --t-max")
        check_seed("batch_seed", self.batch_seed)
        if not self.flow and self.steps is None:
            raise ConfigError("--no-flow skips the true gradient flow, the only reference of a run without gradient "
                              "descent: give --lr ETA (or --lr-fraction F) and --steps S, or drop --no-flow")
        if self.batch_size is not None:
            if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
                raise ConfigError(f"batch_size = {self.batch_size!r} must be a positive integer (inputs per step)")
            if self.steps is None:
                raise ConfigError("--batch-size trains by stochastic gradient descent: give the steps too (--lr ETA "
                                  "or --lr-fraction F, and --steps S)")
        elif self.batch_seed != 0:
            raise ConfigError("--batch-seed seeds the batches of --batch-size B; give --batch-size too")


@dataclasses.dataclass(frozen=True)
class SolverSpec:
    """The solver part of a run: what is predicted and how. The hierarchy truncated at ``p`` (every level q = 2..p),
    the DG correction (``dg``, ``dg_method``), the m = inf row (``infinite``, ``quadrature_order``), the muP limit
    row (``mup_inf``; its expectation by ``limit_method`` with ``limit_points`` or the step ``limit_h``); the ODE solvers
    ``nth_solver`` and ``flow_solver`` with ``rtol``, ``atol``, ``max_steps``; the precision ``dtype``; the kernels
    (``kernel_impl``, a ``matrix_free`` top level, ``chunk`` direction tuples per batch, ``devices``,
    ``memory_budget`` in bytes) and whether to ``save_kernels`` K^(r)(0) in the file, and the trajectories K^(2)(t)
    of the flow, gradient descent and every row (``save_k2``; their errors are recorded either way)."""

    p: int = 4
    dg: bool | None = None
    dg_method: str | None = None
    infinite: bool | None = None
    quadrature_order: int = DEFAULT_ORDER
    mup_inf: bool | None = None
    limit_method: str = "auto"
    limit_points: int = 2**16
    limit_h: float = 0.2
    nth_solver: str = "tsit5"
    flow_solver: str = "dopri8"
    rtol: float = 1e-10
    atol: float = 1e-12
    max_steps: int = 100_000
    dtype: str = "float64"
    kernel_impl: str = "auto"
    matrix_free: bool = False
    chunk: int | None = None
    devices: int | None = None
    memory_budget: int | None = None
    save_kernels: bool = False
    save_k2: bool = True

    def validate(self) -> None:
        if not isinstance(self.p, int) or isinstance(self.p, bool) or self.p < 2:
            raise ConfigError(f"p = {self.p!r} must be an integer >= 2 (p = 2 is the frozen NTK)")
        for name in ("nth_solver", "flow_solver"):  # named for the CLI option
            try:
                SolverSettings(solver=getattr(self, name), rtol=self.rtol, atol=self.atol, max_steps=self.max_steps)
            except ConfigError as e:
                raise ConfigError(f"{name}: {e}") from None
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype = {self.dtype!r}; accepted: {', '.join(DTYPES)}")
        if self.memory_budget is not None and self.memory_budget <= 0:
            raise ConfigError(f"memory_budget = {self.memory_budget!r} must be a positive number of bytes")
        if self.dg and self.p < 4:
            raise ConfigError(f"the DG correction needs K^(3) and K^(4), so p >= 4; got p = {self.p}")
        if self.matrix_free and self.p < 3:
            raise ConfigError(f"matrix_free needs p >= 3 (at p = {self.p} the top kernel is K^(2) itself)")
        if self.dg and self.matrix_free and self.p == 4:
            raise ConfigError("the DG correction needs a dense K^(4), which matrix_free at p = 4 never forms; "
                              "use --no-dg, p >= 5, or drop --matrix-free")
        if self.devices is not None and (not isinstance(self.devices, int) or self.devices < 1):
            raise ConfigError(f"devices = {self.devices!r} must be a positive integer (or None for every device)")
        if self.chunk is not None and (not isinstance(self.chunk, int) or self.chunk < 1):
            raise ConfigError(f"chunk = {self.chunk!r} must be a positive integer (direction tuples per batch)")
        if self.kernel_impl not in ("auto",) + tuple(IMPLEMENTATIONS):
            raise ConfigError(f"kernel_impl = {self.kernel_impl!r}; accepted: auto, {', '.join(IMPLEMENTATIONS)}")
        if self.dg_method is not None and self.dg_method not in DG_METHODS:
            raise ConfigError(f"dg_method = {self.dg_method!r}; accepted: {', '.join(DG_METHODS)}")
        check_limit_options(self.limit_method, self.limit_points, self.limit_h)


@dataclasses.dataclass(frozen=True)
class SpectrumSpec:
    """The spectrum part of a run (docs/math.md section 11): with ``spectra``, the loss Hessian against the NTK at
    every saved time of the reference (the true flow, or gradient descent's saved steps): the ``top`` largest
    eigenvalues of H by Lanczos to the relative residual ``spectrum_tol``, all of G's, and Hutchinson estimates of
    Tr(H^j) and Tr(B^2) from ``probes`` Rademacher probes (seeded by the run's seed). ``nth spectrum`` reads the
    same fields at the initial weights."""

    spectra: bool = False
    top: int = 4
    probes: int = 100
    spectrum_tol: float = 1e-10

    def validate(self) -> None:
        if not isinstance(self.top, int) or isinstance(self.top, bool) or self.top < 1:
            raise ConfigError(f"top = {self.top!r} eigenvalues: must be a positive integer (eigenvalues of H to "
                              "compute)")
        if not isinstance(self.probes, int) or isinstance(self.probes, bool) or self.probes < 2:
            raise ConfigError(f"probes = {self.probes!r} must be an integer >= 2 (the standard error needs two)")
        if not (isinstance(self.spectrum_tol, (int, float)) and math.isfinite(self.spectrum_tol)
                and 0 < self.spectrum_tol < 1):
            raise ConfigError(f"spectrum_tol = {self.spectrum_tol!r} must be a relative residual in (0, 1), e.g. 1e-10")


@dataclasses.dataclass(frozen=True, init=False)
class SolveConfig(Composed):
    """Everything that defines an ``nth solve`` run, in five parts: ``network`` (:class:`~nth.models.ModelSpec`),
    ``problem`` (:class:`ProblemSpec`), ``training`` (:class:`TrainingSpec`), ``solver`` (:class:`SolverSpec`) and
    ``spectrum`` (:class:`SpectrumSpec`).
    ``None`` means "the default" (or "from the file").

    Every field is also read, and given, by its own name (:mod:`nth._composed`): ``SolveConfig(p=4, width=64,
    loss="cross-entropy")``, ``cfg.width``, ``cfg.replace(width=128, seed=1)``.
    """

    network: ModelSpec = part(ModelSpec)
    problem: ProblemSpec = part(ProblemSpec)
    training: TrainingSpec = part(TrainingSpec)
    solver: SolverSpec = part(SolverSpec)
    spectrum: SpectrumSpec = part(SpectrumSpec)

    @property
    def loss_fn(self) -> AbstractLoss:
        """The loss object of the run (:attr:`TrainingSpec.loss_fn`)."""
        return self.training.loss_fn

    @property
    def gradient_descent(self) -> bool:
        """Whether the run trains by gradient descent (:attr:`TrainingSpec.gradient_descent`)."""
        return self.training.gradient_descent

    @property
    def resolved_dg_method(self) -> str:
        """The DG form: ``dg_method``, or (None, "auto") the loss's own, the closed form for mse (its fast path)
        and the ODE for any other loss (docs/math.md section 10)."""
        if self.dg_method not in (None, "auto"):
            return self.dg_method
        return "closed" if isinstance(self.loss_fn, MSE) else "ode"

    def resolved_outputs(self, classes: int | None, targets: int = 1) -> int:
        """Outputs per input of a built-in architecture: ``outputs``, or the number of ``classes`` of the data
        for cross-entropy, or the data's ``targets`` per input for a loss on targets (mse: one-hot digits)."""
        if self.outputs is not None:
            return self.outputs
        if isinstance(self.loss_fn, CrossEntropy):
            if classes is None:
                raise ConfigError("the cross-entropy loss needs class labels: --data digits --classes C, an .npz "
                                  "whose y holds integer labels 0..C-1 (or give --outputs C)")
            return classes
        return 1 if self.loss_fn.takes_labels else targets

    @property
    def use_inf(self) -> bool:
        """The m = inf row (kernel gradient descent with Kbar^(2)): on by default where a limiting kernel exists
        (the mlp in a kernel-regime parametrization; TP4 Theorem 3.8)."""
        return self.network.has_kernel_limit if self.infinite is None else self.infinite

    @property
    def use_mup_inf(self) -> bool:
        """The mup-inf row (the one-hidden-layer mean-field limit, docs/math.md section 12): on by default where it
        exists (the depth-1 mlp under muP or mean-field parametrization)."""
        return self.network.has_mup_limit if self.mup_inf is None else self.mup_inf

    @property
    def use_discrete_o1m(self) -> bool:
        """The discrete O(1/m) system needs dense K^(3), K^(4) (docs/math.md section 7): p >= 4, K^(4) not
        matrix-free (p >= 5 when it is)."""
        return self.gradient_descent and self.p >= (5 if self.matrix_free else 4)

    @property
    def use_dg(self) -> bool:
        """DG needs K^(3) and K^(4): on by default when p >= 4 (p >= 5 when K^(p) is matrix-free)."""
        return self.p >= (5 if self.matrix_free else 4) if self.dg is None else self.dg

    @property
    def nth_settings(self) -> SolverSettings:
        return SolverSettings(solver=self.nth_solver, rtol=self.rtol, atol=self.atol, max_steps=self.max_steps)

    def flow_settings(self, progress: bool = False) -> SolverSettings:
        return SolverSettings(solver=self.flow_solver, rtol=self.rtol, atol=self.atol, max_steps=self.max_steps,
                              progress=progress)

    def for_dtype(self) -> "SolveConfig":
        """The config with solver settings this run can meet, each change announced by :meth:`adjustments`.

        float32 resolves about 1.2e-7, so rtol >= 1e-6 and atol >= 1e-8 (docs/math.md section 6). ReLU's
        gradient flow has a discontinuous right-hand side (relu' jumps where a pre-activation crosses 0), which
        an 8th-order adaptive solver at rtol 1e-10 cannot step across: left at their defaults, its flow solver,
        tolerances and step limit become dopri5, 1e-6, 1e-8 and 10^6 (not where the flow is skipped, ``flow``
        False: the other solves are smooth).
        """
        c = self
        if c.activation == "relu" and c.flow:
            defaults = SolveConfig.defaults()
            relu = {"flow_solver": "dopri5", "rtol": RELU_RTOL, "atol": RELU_ATOL, "max_steps": RELU_MAX_STEPS}
            c = c.replace(**{k: v for k, v in relu.items() if getattr(c, k) == defaults[k]})
        if c.dtype == "float32":
            c = c.replace(rtol=max(c.rtol, FLOAT32_MIN_RTOL), atol=max(c.atol, FLOAT32_MIN_ATOL))
        return c

    def adjustments(self) -> str:
        """One line naming what :meth:`for_dtype` changes, or "" if nothing."""
        c = self.for_dtype()
        changed = [f"{k} {getattr(self, k)} -> {getattr(c, k)}" for k in ("flow_solver", "rtol", "atol", "max_steps")
                   if getattr(self, k) != getattr(c, k)]
        why = "float32 resolves about 1.2e-7" if self.dtype == "float32" else ""
        if self.activation == "relu" and self.flow:
            why = "ReLU's gradient flow has a discontinuous right-hand side" + (f"; {why}" if why else "")
        return f"adjusted for this run ({why}): " + ", ".join(changed) if changed else ""

    def validate(self) -> None:
        """Check every field before any work (each part, then what spans parts); raise ConfigError naming the bad
        value."""
        self.solver.validate()
        spec = self.network
        spec.validate(self.p)
        self.problem.validate()
        self.training.validate()
        self.spectrum.validate()
        if self.infinite and not spec.has_kernel_limit:
            raise ConfigError(spec.no_kernel_limit_reason())
        if self.mup_inf and not spec.has_mup_limit:
            raise ConfigError(spec.no_mup_limit_reason())
        if self.infinite is not False and spec.name == "mlp":
            check_infinite_options(self.activation, "auto", self.quadrature_order, self.beta)
        if self.kernel_impl == "structured" and spec.name != "mlp":
            others = ", ".join(repr(name) for name in IMPLEMENTATIONS if name != "structured")
            raise ConfigError(f"kernel_impl 'structured' exists for the mlp only; the {spec.name} takes {others}")
        if self.outputs is not None:
            self.loss_fn.check_outputs(() if self.outputs == 1 else (self.outputs,), "outputs")
        if self.dg_method == "closed" and not isinstance(self.loss_fn, MSE):
            raise ConfigError(f"dg_method 'closed' (DG Eq. 101) exists for the mse loss only; the "
                              f"{self.loss_fn.describe()} loss takes 'ode' (or leave --dg-method out)")
