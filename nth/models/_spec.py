"""Which model a run uses: a built-in architecture with its options, or the user's ``make_model``.

A :class:`ModelSpec` is the model part of a run's configuration (``nth solve``, ``nth sweep``, ``nth kernel``): the
architecture, its width, seed and outputs, or a weights file. It validates its options before any work (options
that have no meaning for an architecture are refused with the reason), builds the model, and describes itself
for the results file.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from ..checks import check_scales, check_seed
from .._precision import float64_if_asked
from ..errors import ConfigError
from ._activations import activation as make_activation
from ._base import AbstractModel, cast_model
from ._cnn import init_cnn
from ._mlp import init_mlp
from ._param import check_param, preset
from ._resnet import init_resnet
from ._user import build_user_model, load_factory

#: Built-in architectures (``--arch``); a user model is arch "model" (``--model FILE.py:make_model``).
ARCHS = ("mlp", "cnn", "resnet")
DEFAULT_DEPTH = 2


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A built-in architecture (``arch``, ``depth``, ``activation``, ``beta``, ``sigma_w``, ``sigma_a``, ``param``,
    ``kernel_size`` for cnn, ``outputs`` per input) or, with ``model``, the user's ``make_model(width, key)``; at
    ``width`` (None: the caller's default) with the initial weights of ``seed``, or the MLP of a ``weights`` file
    (``.npz`` of W1..WH, a)."""

    arch: str = "mlp"
    model: str | None = None
    depth: int | None = None
    activation: str = "tanh"
    beta: float = 1.0
    sigma_w: float = 1.0
    sigma_a: float = 1.0
    param: str = "ntk"
    kernel_size: int = 3
    width: int | None = None
    seed: int = 0
    weights: str | None = None
    outputs: int | None = None

    @property
    def name(self) -> str:
        return "model" if self.model is not None else self.arch

    @property
    def resolved_depth(self) -> int | None:
        return None if self.model is not None else (self.depth or DEFAULT_DEPTH)

    def validate(self, p: int) -> None:
        """Check every option before any work; ConfigError names the bad value and what is accepted."""
        check_seed("seed", self.seed)
        if self.width is not None and (not isinstance(self.width, int) or isinstance(self.width, bool)
                                       or self.width < 1):
            raise ConfigError(f"width = {self.width!r} must be a positive integer")
        if self.outputs is not None:
            if not isinstance(self.outputs, int) or isinstance(self.outputs, bool) or self.outputs < 1:
                raise ConfigError(f"outputs = {self.outputs!r} must be a positive integer (outputs per input)")
            if self.model is not None or self.weights is not None:
                raise ConfigError("--outputs sets the outputs of a built-in architecture; "
                                  + ("your make_model sets its own" if self.model else "the weights file sets them "
                                     "(a of shape (m, k))"))
        if self.weights is not None:
            if self.name != "mlp":
                raise ConfigError(f"--weights holds MLP weights (W1..WH, a); it cannot be used with "
                                  f"{'--model' if self.model else '--arch ' + self.arch}")
            if self.width is not None or self.depth is not None:
                raise ConfigError("width and depth are read from the weights file; do not pass --width/--depth "
                                  "together with --weights")
        if self.model is not None:
            defaults = ModelSpec()
            given = [f"--{f.replace('_', '-')}" for f in ("depth", "activation", "beta", "sigma_w", "sigma_a",
                                                          "param", "kernel_size")
                     if getattr(self, f) != getattr(defaults, f) and not (f == "depth" and self.depth is None)]
            if given or self.arch != "mlp":
                raise ConfigError(f"{', '.join(given) or '--arch'} cannot be used with --model: your make_model "
                                  "sets the architecture, its initialization and its learning rates")
            load_factory(self.model)
            return
        if self.arch not in ARCHS:
            raise ConfigError(f"arch {self.arch!r} is not known; accepted: {', '.join(ARCHS)} (or --model "
                              "FILE.py:make_model for your own)")
        if self.depth is not None and (not isinstance(self.depth, int) or isinstance(self.depth, bool)
                                       or self.depth < 1):
            raise ConfigError(f"depth = {self.depth!r} must be a positive integer")
        make_activation(self.activation, self.beta).check_level(p)
        check_scales(sigma_w=self.sigma_w, sigma_a=self.sigma_a)
        check_param(self.param)
        if self.param != "ntk" and self.arch != "mlp":
            raise ConfigError(f"param {self.param!r} is defined for the mlp only (TP4's abc-parametrizations are "
                              f"mapped onto the MLP); the {self.arch} is in NTK parametrization")
        if self.arch == "mlp":
            preset(self.param, self.resolved_depth)  # meanfield refuses depth >= 2
        if self.arch == "cnn":
            if not isinstance(self.kernel_size, int) or self.kernel_size < 1 or self.kernel_size % 2 == 0:
                raise ConfigError(f"kernel_size = {self.kernel_size!r} must be an odd positive integer")
        elif self.kernel_size != 3:
            raise ConfigError(f"--kernel-size is a cnn option; arch {self.arch!r} has no convolutions")

    @property
    def has_kernel_limit(self) -> bool:
        """Whether the m = inf row (kernel gradient descent with the limiting NTK, docs/math.md section 5) exists:
        the MLP recursion under a kernel-regime parametrization."""
        return self.name == "mlp" and preset(self.param, 1).has_kernel_limit

    @property
    def has_mup_limit(self) -> bool:
        """Whether the mup-inf row (the one-hidden-layer mean-field limit, docs/math.md section 12) exists: the
        depth-1 mlp under a parametrization whose unit constants do not move with m (muP, mean-field)."""
        return (self.name == "mlp" and self.resolved_depth == 1 and preset(self.param, 1).has_mean_field_limit)

    def no_mup_limit_reason(self) -> str:
        """Why there is no mup-inf row (for a spec without :attr:`has_mup_limit`)."""
        if self.name != "mlp":
            what = "a user model" if self.model else f"the {self.name}"
            return f"the mup-inf row is the limit of a one-hidden-layer mlp, not of {what}; drop --mup-inf"
        if self.resolved_depth != 1:
            return (f"the mup-inf row exists at depth 1 (deeper muP nets need TP4 Secs. 6.2-7, where W and W^T "
                    f"correlate); got depth {self.resolved_depth}; use --depth 1 or drop --mup-inf")
        return (f"parametrization {self.param!r} has no mean-field limit (its unit constants move with m, docs/math.md "
                "section 12); use --param mup or meanfield, or drop --mup-inf (the kernel-regime limit is row 'inf')")

    def no_kernel_limit_reason(self) -> str:
        """Why there is no m = inf row (for a spec without :attr:`has_kernel_limit`)."""
        if self.name != "mlp":
            return (f"the m = inf row needs the limiting NTK, whose layer recursion nth implements for the mlp only "
                    f"(not for {'a user model' if self.model else 'the ' + self.name}); drop --inf")
        abc = preset(self.param, 1)
        return (f"parametrization {self.param!r} ({abc.regime()}, r = {abc.r}) has no limiting kernel that training "
                "follows (TP4 Theorem 3.8: only nontrivial stable parametrizations with r > 0 are in the kernel "
                "regime); use param 'ntk' or 'standard', or drop --inf")

    def build(self, *, seed: int, width: int, in_shape: tuple[int, ...], dtype=jnp.float64,
              outputs: int = 1) -> AbstractModel:
        """The model of this spec at ``width`` with initial weights from ``seed``, parameters in ``dtype``, and
        ``outputs`` outputs per input (a built-in architecture; the user's model sets its own)."""
        float64_if_asked(dtype)
        if self.model is not None:
            return cast_model(build_user_model(self.model, width, seed, in_shape), dtype)
        kw = dict(sigma_w=self.sigma_w, sigma_a=self.sigma_a, beta=self.beta, dtype=dtype, outputs=outputs)
        if self.arch == "cnn":
            return init_cnn(seed, in_shape, width, self.resolved_depth, self.activation,
                            kernel_size=self.kernel_size, **kw)
        if len(in_shape) != 1:
            raise ConfigError(f"the {self.arch} takes inputs of shape (n, d); these have shape (n, "
                              f"{', '.join(map(str, in_shape))}) (use --arch cnn for images, or flatten them)")
        if self.arch == "resnet":
            return init_resnet(seed, in_shape[0], width, self.resolved_depth, self.activation, **kw)
        return init_mlp(seed, in_shape[0], width, self.resolved_depth, self.activation, param=self.param, **kw)

    def describe(self) -> dict[str, Any]:
        """The options that define the architecture (for files and tables)."""
        if self.model is not None:
            return {"arch": "model", "model": self.model}
        out: dict[str, Any] = {"arch": self.arch, "depth": self.resolved_depth, "activation": self.activation,
                               "sigma_w": self.sigma_w, "sigma_a": self.sigma_a}
        if self.activation == "softplus":
            out["beta"] = self.beta
        if self.arch == "mlp":
            out["param"] = self.param
        if self.arch == "cnn":
            out["kernel_size"] = self.kernel_size
        return out
