"""The scaling table on paper for a kernel stage across hosts (README, Beyond one machine): bytes per device,
communication and expected time of K^(2)..K^(p) for one network, from nth's own memory plan and from the time
of real batches of the same computation measured on this machine.

    python scripts/cluster_plan.py --n 256 --width 8192 --depth 2 --p 4 --hosts 8 --devices-per-host 8 \
        --device-memory 80GiB --link-gbps 200 > results/cluster_plan.md

Under ``nth launch`` / ``--distributed`` the batches of direction tuples are shared out among the processes
(batch i to process i mod P), each process shards its batches over its local devices, and every round's
results are gathered into every process (``nth._cluster.gather_objects``): each process ends with the whole
kernel on the host and on its first device. The time column assumes every device as fast as the one measured
here; run the script on the target device for its own rate.
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp

import nth
from nth.cli import parse_bytes
from nth.kernel._engine import _batch, _index_tuples, _ntk_spec
from nth.kernel._impl import implementation as choose_implementation
from nth.kernel._plan import format_bytes, plan_kernels
from nth.models import output_shape


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--width", type=int, default=8192)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--p", type=int, default=4)
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--devices-per-host", type=int, default=8)
    ap.add_argument("--device-memory", type=parse_bytes, default=parse_bytes("80GiB"))
    ap.add_argument("--link-gbps", type=float, default=200.0, help="each host's network bandwidth, Gbit/s")
    ap.add_argument("--measure", type=int, default=2, help="timed batches per level (after one to compile)")
    ap.add_argument("--measure-chunk", type=int, default=1, help="direction tuples per timed batch (this machine's "
                    "memory; the time scales to the plan's batches by tuples)")
    args = ap.parse_args()
    nth.enable_float64()
    X = jnp.asarray(nth.default_problem(n=args.n, d=args.d, seed=0).X)
    net = nth.init_mlp(0, args.d, args.width, args.depth, "tanh")
    devices = args.hosts * args.devices_per_host
    plan = plan_kernels(net, args.n, args.p, memory_budget=args.device_memory)
    impl = choose_implementation(net, "auto")
    shape = output_shape(net, X.shape[1:], X.dtype)
    rows, total_single = [], 0.0
    for r in range(2, args.p + 1):
        spec = _ntk_spec(impl, r)
        tuples = _index_tuples(args.n, spec.slots).shape[0]
        chunk = min(plan.chunk, tuples)
        batches = math.ceil(tuples / chunk)
        timed = min(args.measure_chunk, tuples)
        ib = jnp.asarray(_index_tuples(args.n, spec.slots)[:timed])
        jax.block_until_ready(_batch(spec, net, X, X, ib, True, False, shape))  # compile
        t = time.perf_counter()
        for _ in range(args.measure):
            jax.block_until_ready(_batch(spec, net, X, X, ib, True, False, shape))
        per_batch = (time.perf_counter() - t) / args.measure * chunk / timed
        single = per_batch * batches
        total_single += single
        rows.append((r, tuples, chunk, batches, per_batch, single, plan.kernel_bytes[r]))
    kernel_total = sum(plan.kernel_bytes.values())
    link = args.link_gbps * 1e9 / 8  # bytes per second into one host
    gather = kernel_total * (args.hosts - 1) / args.hosts / link
    print(f"# K^(2)..K^({args.p}) across {args.hosts} hosts x {args.devices_per_host} devices\n")
    print(f"MLP, depth {args.depth}, tanh, width {args.width}, n = {args.n} (N = n k = {args.n}), d = {args.d}; "
          f"{plan.num_params:,} parameters; float64; implementation {plan.implementation}; batches of {plan.chunk} "
          f"direction tuples (the plan for {format_bytes(args.device_memory)} per device). One tuple per timed call (a batch of many runs faster per tuple: the times are upper bounds), measured on "
          f"{jax.devices()[0].device_kind} ({jax.devices()[0].platform}), {args.measure} timed batches per level.\n")
    print("| level | direction tuples | per batch | batches | s per batch (from the time of one tuple) | one device | "
          f"{devices} devices | K^(r) bytes |")
    print("|---|---|---|---|---|---|---|---|")
    for r, tuples, chunk, batches, per_batch, single, kb in rows:
        print(f"| K^({r}) | {tuples:,} | {chunk} | {batches:,} | {per_batch:.3g} | {single / 3600:.3g} h | "
              f"{single / devices / 3600:.3g} h | {format_bytes(kb)} |")
    print(f"\n- One device: {total_single / 3600:.3g} h; {devices} devices: {total_single / devices / 3600:.3g} h of "
          f"computation: one process per host takes every {args.hosts}th batch ({math.ceil(rows[-1][3] / args.hosts):,} "
          f"rounds at the top level) and shards it over its {args.devices_per_host} devices "
          f"({max(1, plan.chunk // args.devices_per_host)} tuples each). The device measured here is a "
          f"{jax.devices()[0].platform.upper()}; an accelerator's own rate, from this script run on it, replaces it.")
    print(f"- Bytes per device: weights {format_bytes(plan.num_params * plan.itemsize)}, one batch's work "
          f"{format_bytes(plan.work_bytes)}, and the gathered kernels {format_bytes(kernel_total)} (every process "
          f"holds them whole, on the host and on its first device).")
    print(f"- Communication: every host receives the pieces it did not compute, {format_bytes(kernel_total)} x "
          f"{args.hosts - 1}/{args.hosts} = {format_bytes(int(kernel_total * (args.hosts - 1) / args.hosts))}: "
          f"{gather:.3g} s at {args.link_gbps:g} Gbit/s, against {total_single / devices:.3g} s of computation "
          "(the gather is not the bottleneck; a gather to process 0 alone would cut the other hosts' memory, not "
          "the time).")


if __name__ == "__main__":
    main()
