"""Where the train step's time goes: forward, backward, Adam's update, the rest; and the whole step under XLA flags.

    python benchmarks/step_parts.py                          # accelerator: resnet50 224x224 bfloat16, batch 128
    python benchmarks/step_parts.py --backbone small_resnet --size 64x32 --dtype float32 --batch 32   # a CPU
    python benchmarks/step_parts.py --xla_flags="--xla_gpu_enable_latency_hiding_scheduler=true;..."   # (with =)

Each part is its own jitted program on the same device-resident P x K batch and train state (one device, no
input pipeline, no TensorFlow), timed over `--steps` calls after `--warmup`, synced at the end only:
  forward            the network in training mode (BatchNorm batch statistics and their running averages)
  forward+backward   the loss and its gradients (`steps.loss_and_grads`: classification + MSML)
  adam update        `state.apply_gradients` alone (the optimizer's update of every parameter leaf)
  adam, one buffer   the same update with `optax.flatten`: every leaf in one vector (how much a fused update saves)
  whole step         `steps.train_step` (the above, BatchNorm's statistics written back, the step's metrics)
Derived: backward = forward+backward - forward; the rest = whole step - forward+backward - adam update. The parts
are separately compiled programs, and XLA fuses across them inside the whole step, so the derived figures are
estimates (the rest can come out negative).
With `--xla_flags` (variants separated by ';'), the whole step is timed again in a fresh process per variant
with that XLA_FLAGS, beside a fresh process without it; unknown flags make XLA abort, which the row reports.
"""

import argparse
import functools
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script from anywhere


def _timed(fn, args, steps, warmup, carry=None):
    """Seconds per call of `fn(*args)`; `carry`: index of an argument replaced by the call's first output
    (a donated state)."""
    import jax

    args = list(args)
    out = None
    for i in range(warmup + steps):
        if i == warmup:
            jax.block_until_ready(out)
            start = time.perf_counter()
        out = fn(*args)
        if carry is not None:
            args[carry] = out[0]
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps


def parts(backbone, size, dtype, batch, k, num_classes, embed_dim, steps, warmup, whole_only=False):
    """{part: seconds per call} for one setting (see the module docstring)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from benchmarks.train_throughput import base_config
    from msml_jax.models import get_model, init_variables
    from msml_jax.training import steps as train_steps

    config = base_config()
    config.model.name, config.model.embed_dim, config.dtype = backbone, embed_dim, dtype
    config.P, config.K, config.batch_size = batch // k, k, batch
    settings = train_steps.StepSettings.from_config(config)
    model = get_model(backbone, num_classes, embed_dim=embed_dim, dtype=dtype)
    variables = init_variables(model, size, jax.random.key(0))

    def fresh_state(tx=None):  # a state of its own: a donating call deletes its buffers
        v = jax.tree.map(jnp.copy, variables)
        if tx is None:
            return train_steps.create_train_state(model, config, v)
        return train_steps.TrainState.create(apply_fn=model.apply, params=v["params"], batch_stats=v["batch_stats"],
                                             tx=tx)

    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (batch, *size, 3), np.uint8))
    labels = jnp.asarray(np.repeat(rng.choice(num_classes, batch // k, replace=False), k).astype(np.int32))
    whole = jax.jit(functools.partial(train_steps.train_step, settings=settings), donate_argnums=0)
    out = {"whole step": _timed(whole, (fresh_state(), images, labels), steps, warmup, carry=0)}
    if whole_only:
        return out
    state = fresh_state()

    def forward(state, images):
        return state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, images, train=True,
                              mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})

    out["forward"] = _timed(jax.jit(forward), (state, images), steps, warmup)
    loss_and_grads = jax.jit(functools.partial(train_steps.loss_and_grads, settings=settings))
    out["forward+backward"] = _timed(loss_and_grads, (state, images, labels), steps, warmup)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), state.params)
    update = jax.jit(lambda state, grads: (state.apply_gradients(grads=grads),), donate_argnums=0)
    out["adam update"] = _timed(update, (state, grads), steps, warmup, carry=0)
    flat = fresh_state(optax.flatten(optax.adam(train_steps.learning_rate_schedule(settings))))
    out["adam, one buffer"] = _timed(update, (flat, grads), steps, warmup, carry=0)
    out["backward"] = out["forward+backward"] - out["forward"]
    out["the rest"] = out["whole step"] - out["forward+backward"] - out["adam update"]
    return out


def _whole_step_in_child(args, xla_flags):
    """The whole step's seconds in a fresh process with XLA_FLAGS=`xla_flags` ('' = unset); None and the error's
    last line when it fails."""
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); from benchmarks.step_parts import parts; "
            f"print(parts({args.backbone!r}, {args.size_hw!r}, {args.dtype!r}, {args.batch}, {args.K}, "
            f"{args.num_classes}, {args.embed_dim}, {args.steps}, {args.warmup}, whole_only=True)['whole step'])")
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if xla_flags:
        env["XLA_FLAGS"] = xla_flags
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode:
        lines = (out.stderr or out.stdout).strip().splitlines()
        return None, lines[-1] if lines else f"exit {out.returncode}"
    return float(out.stdout.strip().splitlines()[-1]), None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", default="224x224", help="HxW")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch", type=int, default=128, help="P x K images")
    parser.add_argument("--K", type=int, default=4)
    parser.add_argument("--num_classes", type=int, default=751)
    parser.add_argument("--embed_dim", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20, help="timed calls per part")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--xla_flags", default=None, help="';'-separated XLA_FLAGS variants for the whole step")
    args = parser.parse_args(argv)
    args.size_hw = tuple(int(v) for v in args.size.split("x"))
    import jax

    device = jax.devices()[0]
    print(f"{device.device_kind} ({device.platform}); {args.backbone} {args.size} {args.dtype}, batch {args.batch}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '<unset>')}", flush=True)
    times = parts(args.backbone, args.size_hw, args.dtype, args.batch, args.K, args.num_classes, args.embed_dim,
                  args.steps, args.warmup)
    whole = times["whole step"]
    for name in ("forward", "backward", "forward+backward", "adam update", "adam, one buffer", "the rest",
                 "whole step"):
        print(f"  {name:<18} {times[name] * 1e3:9.2f} ms  {times[name] / whole:6.1%} of the step"
              + (f"  {args.batch / whole:9.1f} img/s" if name == "whole step" else ""), flush=True)
    if args.xla_flags:
        print("whole step per XLA_FLAGS variant, each in a fresh process:", flush=True)
        for flags in [""] + [f.strip() for f in args.xla_flags.split(";") if f.strip()]:
            seconds, error = _whole_step_in_child(args, flags)
            label = flags or "<unset>"
            if seconds is None:
                print(f"  {label}: failed: {error}", flush=True)
            else:
                print(f"  {seconds * 1e3:9.2f} ms  {args.batch / seconds:9.1f} img/s  {label}", flush=True)


if __name__ == "__main__":
    main()
