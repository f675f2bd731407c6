"""``kernelscope runs show DIR``: what a run directory holds, and its metrics per epoch."""

from __future__ import annotations

import click

__all__ = ["runs_group", "format_run"]


def format_run(run) -> str:
    """A plain-text summary of a :class:`~kernelscope.train.rundir.Run` (an inconsistent manifest says so)."""
    m = run.manifest
    data, model, config = m.get("dataset") or {}, m.get("model") or {}, run.config
    said = f"{m.get('status')}  ({m.get('epochs_completed', 0)} of {config.get('epochs', '?')} epochs)"
    inconsistent = run.inconsistencies()
    status = f"inconsistent manifest: {'; '.join(inconsistent)} (it says {said})" if inconsistent else said
    lines = [
        f"run        {run.path}",
        f"status     {status}",
        f"model      {model.get('name', '?')}  {model.get('kwargs', {})}",
        f"data       {data.get('name', '?')}  train {data.get('n_train')}  test {data.get('n_test')}  "
        f"image {data.get('image_shape')}  classes {len(data.get('classes') or [])}",
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
            cells = [_cell(row.get(k), w) for k, w in (("train_loss", 10), ("train_acc", 9), ("test_loss", 9),
                                                       ("test_acc", 8))]
            lines.append(f"{_cell(row.get('epoch'), 5, '')} {' '.join(cells)} {_cell(row.get('seconds'), 8, '.2f')}")
    return "\n".join(lines)


def _cell(value, width: int, spec: str = ".4f") -> str:
    """``value`` formatted in ``width`` columns; anything that is not a number shows as is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, f">{width}{spec}")
    return format(str(value), f">{width}")


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
