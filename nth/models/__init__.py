"""Models: the interface every stage works with, and its implementations (docs/math.md sections 1, 5, 9).

``AbstractModel`` is the interface; ``MLP`` (with its structured rank-one kernel path), ``CNN`` and ``ResNet``
are the built-in architectures; ``Wrapped`` adapts the user's own Equinox module (``as_model``). Activations
are objects (``AbstractActivation``) and TP4's abc-parametrizations map onto the MLP (``ABC``, ``preset``).
"""

from ._activations import (
    ACTIVATIONS as ACTIVATIONS,
    AbstractActivation as AbstractActivation,
    DEFAULT_ORDER as DEFAULT_ORDER,
    Erf as Erf,
    Gelu as Gelu,
    Linear as Linear,
    Relu as Relu,
    SMOOTH_ACTIVATIONS as SMOOTH_ACTIVATIONS,
    Sigmoid as Sigmoid,
    Softplus as Softplus,
    Tanh as Tanh,
    activation as activation,
    hermite_rule as hermite_rule,
)
from ._base import (
    AbstractModel as AbstractModel,
    Direction as Direction,
    Applied as Applied,
    Wrapped as Wrapped,
    as_model as as_model,
    cast_model as cast_model,
    check_inputs as check_inputs,
    combine as combine,
    flow_direction as flow_direction,
    grad_f as grad_f,
    model_dtype as model_dtype,
    num_outputs as num_outputs,
    num_params as num_params,
    output_shape as output_shape,
    partition as partition,
    sample_direction as sample_direction,
)
from ._cnn import CNN as CNN, init_cnn as init_cnn
from ._derivatives import grouped_derivative as grouped_derivative, mixed_partial as mixed_partial
from ._derivatives import move_along as move_along
from ._derivatives import nested_derivative as nested_derivative, sym_gram as sym_gram
from ._mlp import INITS as INITS, MLP as MLP, check_init as check_init, draw_mlp as draw_mlp
from ._mlp import init_mlp as init_mlp, mlp_from_arrays as mlp_from_arrays
from ._param import ABC as ABC, PRESETS as PRESETS, check_param as check_param, preset as preset
from ._resnet import ResNet as ResNet, init_resnet as init_resnet
from ._spec import ARCHS as ARCHS, DEFAULT_DEPTH as DEFAULT_DEPTH, ModelSpec as ModelSpec
from ._user import build_user_model as build_user_model, load_factory as load_factory
