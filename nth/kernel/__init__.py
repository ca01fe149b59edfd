"""Kernels: K^(2) .. K^(p) of any model by forward mode, their memory plan, and the infinite-width limit.

``kernels`` / ``kernel_fn`` / ``KernelOperator`` are the engine (batching, sharding, test inputs, matrix-free
top level) around the one loop over direction tuples every tensor goes through (``tensor``); ``gd_tensors``
are the tensors of the discrete-time hierarchy (O11, O111, M, P); ``"structured"``, ``"factored"``,
``"contraction"`` and ``"jvp"`` are the named implementations of one tuple of directions (``IMPLEMENTATIONS``);
``plan_kernels`` predicts memory from shapes; ``limiting_kernels`` is the MLP's infinite-width NNGP kernel and
NTK (docs/math.md sections 2, 5, 9).
"""

from ._engine import KernelOperator as KernelOperator, kernel as kernel, kernel_fn as kernel_fn
from ._engine import device_mesh as device_mesh
from ._engine import TensorSpec as TensorSpec, kernels as kernels, ntk as ntk, tensor as tensor
from ._engine import kernels_and_test as kernels_and_test
from ._contract import correlation_value as correlation_value
from ._notation import CorrelationFunction as CorrelationFunction, canonical as canonical_correlation
from ._notation import parse as parse_correlation
from ._gd import GD_TENSORS as GD_TENSORS, gd_tensors as gd_tensors
from ._impl import (
    IMPLEMENTATIONS as IMPLEMENTATIONS,
    AbstractKernelImplementation as AbstractKernelImplementation,
    Factored as Factored,
    NestedJVP as NestedJVP,
    Structured as Structured,
    forward_entries as forward_entries,
    implementation as implementation,
    jacobian_ntk as jacobian_ntk,
)
from ._infinite import LimitingKernels as LimitingKernels, check_options as check_infinite_options
from ._infinite import limiting_kernels as limiting_kernels
from ._spectrum import HessianOperators as HessianOperators, Lanczos as Lanczos, Spectrum as Spectrum
from ._spectrum import hessian_operators as hessian_operators, hutchinson as hutchinson
from ._spectrum import SPECTRUM_LAWS as SPECTRUM_LAWS, SpectrumLaw as SpectrumLaw, lanczos_top as lanczos_top
from ._spectrum import separated_top as separated_top, spectrum as spectrum, stack_spectra as stack_spectra
from ._plan import (
    KernelPlan as KernelPlan,
    default_memory_budget as default_memory_budget,
    format_bytes as format_bytes,
    kernel_bytes as kernel_bytes,
    plan_kernels as plan_kernels,
)
