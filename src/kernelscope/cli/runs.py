"""``kernelscope runs show DIR``: what a run directory holds, and its metrics per epoch."""

from __future__ import annotations

import click

__all__ = ["runs_group", "format_run"]


def format_run(run) -> str:
    """A plain-text summary of a :class:`~kernelscope.train.rundir.Run`."""
    m = run.manifest
    data, model, config = m["dataset"], m["model"], m.get("config", {})
    lines = [
        f"run        {run.path}",
        f"status     {m.get('status')}  ({m.get('epochs_completed', 0)} of {config.get('epochs', '?')} epochs)",
        f"model      {model['name']}  {model.get('kwargs', {})}",
        f"data       {data['name']}  train {data.get('n_train')}  test {data.get('n_test')}  "
        f"image {data.get('image_shape')}  classes {len(data.get('classes', []))}",
        f"recipe     preset {config.get('preset')}  optimizer {config.get('optimizer')}  lr {config.get('lr')}  "
        f"weight decay {config.get('weight_decay')}  init scale {config.get('init_scale')}  seed {m.get('seed')}",
        f"recorded   kernel epochs {run.epochs}" + (f"  steps {len(run.steps)}" if run.steps else ""),
    ]
    kernels = run.kernels(run.epochs[0]) if run.epochs else {}
    for name in run.conv_layers:
        shape = tuple(kernels[name].shape) if name in kernels else "?"
        lines.append(f"  conv     {name:<24} {shape}")
    if run.metrics:
        lines.append("")
        lines.append(f"{'epoch':>5} {'train_loss':>10} {'train_acc':>9} {'test_loss':>9} {'test_acc':>8} {'seconds':>8}")
        for row in run.metrics:
            lines.append(f"{row['epoch']:>5} {row['train_loss']:>10.4f} {row['train_acc']:>9.4f} "
                         f"{row['test_loss']:>9.4f} {row['test_acc']:>8.4f} {row['seconds']:>8.2f}")
    return "\n".join(lines)


@click.group("runs")
def runs_group():
    """Inspect run directories written by `kernelscope train`."""


@runs_group.command("show")
@click.argument("run_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def show_command(run_dir, as_json):
    """Summarise the run in RUN_DIR: model, data, recipe, conv layers and metrics per epoch."""
    import json

    from kernelscope.train.rundir import load_run

    run = load_run(run_dir)
    click.echo(json.dumps(run.manifest, indent=2) if as_json else format_run(run))
