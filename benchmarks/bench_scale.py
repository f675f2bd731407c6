"""Analyses at scale: a folder of >= 5,000 real images through the folder pipeline and a top-patches pass.

Data: a folder the benchmark makes (once; reused while its parameters match) from the bundled
real photographs (:func:`kernelscope.data.images.sample_image_names`: scikit-image, scikit-learn,
matplotlib and opencv-doc photos): random crops (30-100% of the short side, anywhere in the photo:
shifts), horizontal flips, resized to ``--side`` px (128) and saved as JPEG (every 50th as PNG;
grey photos stay grey), 1,000 to a sub-folder, plus one truncated JPEG per 1,000 images, which
every pass must skip and count. ``--tenfold`` adds a folder of 10x the images (hard links to the
1x files under new names: the same decoding work, no extra disk) for the memory figures.

Measured, each against a baseline named in its table and measured in the same run:

(a) the folder pipeline alone (:func:`kernelscope.data.folder.load_batches`: decode, resize to the
    network's input, normalise) at ``workers`` 0, 1, 2; baseline: workers=0 (in-process);
(b) one process, in-process: a plain forward pass of the network up to the layer over the folder
    stream (baseline) and :func:`kernelscope.analysis.toppatches.top_patches` over the same stream;
(c) the CLI, ``python -m kernelscope patches SOURCE --images DIR`` with 1 process (baseline) and
    ``torchrun --standalone --nproc_per_node=2 -m kernelscope patches ...`` with 2; images/s from the
    wall time less the start-up (the same command on a 32-image folder), the top-k of both compared,
    and the lines the passes print about merging. Skipped with a message when the CLI does not
    take a folder;
(d) peak resident memory (VmHWM) of every process (rank, DataLoader worker) of (c) and of the
    pipeline alone, at 1x and (``--tenfold``) 10x the images;
(e) the merge overhead: two ranks' top-k states pickled (what ``all_gather_object`` sends) and
    merged, against the time of one image of the pass (baseline).

Network: torchvision's ResNet-18 architecture (:mod:`kernelscope.models.standard`, random weights:
speed does not depend on training) on 128 px images, saved as a state dict and opened as
``resnet18.pt --arch resnet18``; the default layer ``layer2.1.conv2`` (28 x 28 at 128 px)
(``--layer``; ``--source mobilenet_v2-imagenet`` uses the pretrained 224 px MobileNetV2).

Run: ``.venv/bin/python benchmarks/bench_scale.py [--n 5000] [--tenfold] [--workers 2]``; a quick
check: ``--n 300``. A shared machine makes the absolute numbers noisy, the ratios less so.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # NumPy and torch share the process (FINDINGS.md)
os.environ.setdefault("KERNELSCOPE_PROGRESS", "0")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

PER_FOLDER = 1000
CORRUPT_EVERY = 1000
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- the folder
def make_folder(root: Path, n: int, side: int, seed: int = 0) -> dict:
    """``n`` images cut from the bundled photos into ``root`` (reused when made with the same parameters)."""
    from PIL import Image

    from kernelscope.data.images import load_image, sample_image_names

    recipe = {"n": n, "side": side, "seed": seed, "per_folder": PER_FOLDER, "corrupt_every": CORRUPT_EVERY}
    marker = root / "recipe.json"
    if marker.is_file() and json.loads(marker.read_text()).get("recipe") == recipe:
        return json.loads(marker.read_text())
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    start = time.perf_counter()
    photos, names = [], []
    for name in sample_image_names():
        try:
            photo = load_image(f"sample:{name}")  # (H, W) or (H, W, 3) in [0, 1]
        except Exception:  # noqa: BLE001 - an optional package (opencv-doc) not installed: use the others
            continue
        if min(photo.shape[:2]) >= 64:
            photos.append(Image.fromarray(np.round(photo * 255).astype(np.uint8)))
            names.append(name)
    rng = np.random.default_rng(seed)
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        crop = int(min(w, h) * rng.uniform(0.3, 1.0))
        x0, y0 = int(rng.integers(0, w - crop + 1)), int(rng.integers(0, h - crop + 1))
        image = photo.crop((x0, y0, x0 + crop, y0 + crop)).resize((side, side), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        folder = root / f"part{i // PER_FOLDER:03d}"
        folder.mkdir(exist_ok=True)
        stem = f"{names[i % len(photos)]}_{i:06d}"
        if i % 50 == 49:
            image.save(folder / f"{stem}.png")
        else:
            image.save(folder / f"{stem}.jpg", quality=90)
        if i % CORRUPT_EVERY == CORRUPT_EVERY - 1:  # a truncated JPEG: skipped and counted, not a crash
            whole = io.BytesIO()
            image.save(whole, "JPEG", quality=90)
            (folder / f"{stem}_truncated.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 3])
    info = {"recipe": recipe, "photos": names, "files": n + n // CORRUPT_EVERY, "corrupt": n // CORRUPT_EVERY,
            "seconds": round(time.perf_counter() - start, 1)}
    marker.write_text(json.dumps(info))
    return info


def tenfold_folder(base: Path, root: Path) -> int:
    """10 hard-linked copies of ``base``'s images under new names (10x the files, no extra disk)."""
    files = sorted(p for p in base.rglob("*") if p.suffix in (".jpg", ".png"))
    marker = root / "recipe.json"
    if marker.is_file() and json.loads(marker.read_text()).get("files") == 10 * len(files):
        return 10 * len(files)
    shutil.rmtree(root, ignore_errors=True)
    for copy in range(10):
        for path in files:
            target = root / f"copy{copy}" / path.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:  # another file system: a real copy
                shutil.copyfile(path, target)
    marker.write_text(json.dumps({"files": 10 * len(files)}))
    return 10 * len(files)


# ------------------------------------------------------------------------------------- processes and memory
def _status(pid: int) -> dict[str, str]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            out[key] = value.strip()
    except OSError:
        pass
    return out


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            ppid = _status(int(entry.name)).get("PPid")
            if ppid:
                children.setdefault(int(ppid), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _label(pid: int, labels: dict[int, str]) -> str:
    if pid in labels:
        return labels[pid]
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        env = dict(item.split("=", 1) for item in
                   Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0") if "=" in item)
        parent = labels.get(int(_status(pid).get("PPid", 0)), "")
    except (OSError, ValueError):
        return "?"
    if "torch.distributed.run" in cmd or "torchrun" in cmd:
        label = "torchrun agent"
    elif parent.startswith(("rank", "process")):
        label = parent.split(" worker")[0] + " worker"
    elif "RANK" in env and "LOCAL_RANK" in env:
        label = f"rank {env['RANK']}"
    elif "kernelscope" in cmd or "bench_scale" in cmd:
        label = "process"
    else:
        label = cmd.split(" ")[0]
    labels[pid] = label
    return label


def run_measured(command: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``command``; wall time, output, and the peak RSS (VmHWM, MiB) of it and each descendant process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, cwd=ROOT)
    peaks: dict[int, tuple[str, float]] = {}
    labels: dict[int, str] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for pid in [proc.pid, *_descendants(proc.pid)]:
                hwm = _status(pid).get("VmHWM")
                if hwm:
                    peaks[pid] = (_label(pid, labels), int(hwm.split()[0]) / 1024)
            done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output, _ = proc.communicate()
    done.set()
    watcher.join()
    by_label: dict[str, float] = {}
    for label, mib in peaks.values():
        by_label[label] = max(mib, by_label.get(label, 0.0))
    return {"rc": proc.returncode, "seconds": time.perf_counter() - start, "output": output,
            "peak_mib": by_label, "max_child_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _memory_line(peaks: dict[str, float]) -> str:
    order = sorted(peaks, key=lambda k: (not k.startswith(("rank", "process")), k))
    return ", ".join(f"{k} {peaks[k]:.0f}" for k in order if k != "torchrun agent" or len(peaks) > 1)


# ------------------------------------------------------------------------------------- in-process measures
def open_network(args, workdir: Path):
    import torch

    from kernelscope.sources import open_source

    if args.source != "resnet18":
        return open_source(args.source), [args.source]
    from kernelscope.models.standard import resnet18

    weights = workdir / "resnet18.pt"
    if not weights.is_file():
        torch.manual_seed(0)
        torch.save(resnet18().state_dict(), weights)
    return open_source(str(weights), arch="resnet18"), [str(weights), "--arch", "resnet18"]


def pipeline_rate(ds, normalise, workers: int, batch: int, limit: int | None = None) -> tuple[float, int, int]:
    """(images/s, images loaded, files skipped) of load_batches over the folder (its first ``limit`` files)."""
    from kernelscope.data.folder import load_batches

    start, loaded, skipped = time.perf_counter(), 0, 0
    order = np.arange(min(len(ds), limit or len(ds)))
    for found in load_batches(ds, order, batch_size=batch, workers=workers, normalise=normalise):
        loaded += len(found.indices)
        skipped += len(found.skipped)
    return loaded / (time.perf_counter() - start), loaded, skipped


def child_pipeline(args) -> None:
    """``--_pipeline DIR``: the folder pipeline alone in a fresh process (for its memory)."""
    import torch

    torch.set_num_threads(args.threads)
    src, _ = open_network(args, Path(args.workdir))
    ds = src.image_folder(args._pipeline)
    rate, loaded, skipped = pipeline_rate(ds, src.normalise, args.workers, args.batch_size)
    print(json.dumps({"rate": rate, "loaded": loaded, "skipped": skipped}))


def bench_pipeline(args, src, folder: Path) -> None:
    ds = src.image_folder(folder)
    print(f"\n(a) folder pipeline alone: {len(ds)} files -> {ds.image_shape or 'their own size'}, normalised, "
          f"batch {args.batch_size}")
    pipeline_rate(ds, src.normalise, 0, args.batch_size, limit=2 * args.batch_size)  # warm-up
    base = None
    for workers in sorted({0, 1, args.workers}):
        rate, loaded, skipped = pipeline_rate(ds, src.normalise, workers, args.batch_size)
        base = base or rate
        name = "workers=0 (baseline)" if workers == 0 else f"workers={workers}"
        print(f"  {name:<24} {rate:8.0f} img/s   {rate / base:5.2f}x   ({loaded} loaded, {skipped} skipped)")


def bench_pass_in_process(args, src, folder: Path) -> None:
    import torch

    from kernelscope.analysis.hooks import forward_until, read_point
    from kernelscope.analysis.toppatches import top_patches
    from kernelscope.data.folder import load_batches

    ds = src.image_folder(folder)
    model, layer = src.model, args.layer
    hooked = read_point(model, layer, args.at)[0]

    def plain() -> float:
        start, n = time.perf_counter(), 0
        with torch.no_grad():
            for found in load_batches(ds, np.arange(len(ds)), batch_size=args.batch_size, workers=args.workers,
                                      normalise=src.normalise):
                forward_until(model, hooked, torch.from_numpy(found.inputs))
                n += len(found.indices)
        return n / (time.perf_counter() - start)

    def patches() -> tuple[float, object]:
        start = time.perf_counter()
        from kernelscope.analysis.passes import Images

        images = Images(folder=ds, normalise=src.normalise)  # what the CLI passes for a folder
        result = top_patches(model, layer, images, k=9, batch_size=args.batch_size, workers=args.workers, at=args.at)
        return result.n_images / (time.perf_counter() - start), result

    print(f"\n(b) one process, in-process, {torch.get_num_threads()} threads, workers={args.workers}, "
          f"layer {layer} ({args.at})")
    rate_plain = plain()
    print(f"  forward to the layer (baseline) {rate_plain:8.1f} img/s")
    try:
        rate_top, result = patches()
    except TypeError as error:  # top_patches without folder support
        print(f"  top-k patches: skipped, top_patches does not read a folder yet ({error})")
        return
    print(f"  top-k patches (k=9)             {rate_top:8.1f} img/s   {rate_top / rate_plain:5.0%} of baseline   "
          f"({result.n_images} images)")


# --------------------------------------------------------------------------------------------- the CLI
def cli_command(args, source_args: list[str], folder: Path, out: Path, nproc: int) -> list[str]:
    start = ([sys.executable, "-m", "kernelscope"] if nproc == 1 else
             [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
              "-m", "kernelscope"])
    command = [*start, "patches", *source_args, "--layer", args.layer, "--images", str(folder),
               "--batch-size", str(args.batch_size), "-k", "9", "--at", args.at, "--out", str(out)]
    if args.cli_workers:
        command += ["--workers", str(args.workers)]
    return command


def _short(command: list[str]) -> str:
    text = " ".join(command).replace(sys.executable, "python")
    return text.replace("python -m torch.distributed.run", "torchrun")


def bench_cli(args, source_args: list[str], folders: dict[str, Path], workdir: Path) -> None:
    help_text = subprocess.run([sys.executable, "-m", "kernelscope", "patches", "--help"], capture_output=True,
                               text=True, cwd=ROOT).stdout
    args.cli_workers = "--workers" in help_text
    tiny = folders["tiny"]
    print(f"\n(c) the CLI, 1 process vs torchrun 2 processes (DataLoader workers per process: "
          f"{args.workers if args.cli_workers else 'none: the CLI has no --workers'})")
    probe = run_measured(cli_command(args, source_args, tiny, workdir / "out-probe", 1))
    if probe["rc"] != 0:
        last = (probe["output"].strip().splitlines() or ["(no output)"])[-1]
        print(f"  skipped: `kernelscope patches --images DIR` does not take a folder yet: {last}")
        return
    results = {}
    for nproc in (1, 2):
        env = {"OMP_NUM_THREADS": "1"} if nproc > 1 else {}  # torchrun's default, said out loud
        startup = run_measured(cli_command(args, source_args, tiny, workdir / f"out-tiny-{nproc}", nproc), env)
        for label, folder in (("1x", folders["1x"]), ("10x", folders.get("10x"))):
            if folder is None:
                continue
            out = workdir / f"out-{label}-{nproc}"
            command = cli_command(args, source_args, folder, out, nproc)
            run = run_measured(command, env)
            if run["rc"] != 0:
                print(f"  {nproc} process(es), {label}: failed (exit {run['rc']}):\n" + run["output"][-2000:])
                return
            results[(nproc, label)] = (run, startup, out)
            if label == "1x":
                print(f"  $ {_short(command)}")
    n = args.n  # the readable images; the truncated ones are skipped
    base = None
    for nproc in (1, 2):
        run, startup, out = results[(nproc, "1x")]
        seconds = run["seconds"] - startup["seconds"]
        rate = n / seconds
        base = base or rate
        name = "1 process (baseline)" if nproc == 1 else f"{nproc} processes (torchrun)"
        print(f"  {name:<24} {run['seconds']:7.1f} s wall, {startup['seconds']:5.1f} s start-up -> "
              f"{rate:7.1f} img/s   {rate / base:5.2f}x")
        for line in run["output"].splitlines():
            if any(word in line.lower() for word in ("merge", "skipped", "top-")):
                print(f"      | {line.strip()}")
    same = _same_topk(results[(1, "1x")][2], results[(2, "1x")][2])
    print(f"  top-k of 2 processes equal to 1 process: {same}")
    print("\n(d) peak resident memory per process (VmHWM, MiB)")
    for (nproc, label), (run, _, _) in sorted(results.items()):
        print(f"  patches, {nproc} process{'es' if nproc > 1 else ''}, {label:>3}: {_memory_line(run['peak_mib'])}")


def _same_topk(a: Path, b: Path) -> str:
    try:
        x, y = np.load(a / "patches.npz"), np.load(b / "patches.npz")
    except OSError as error:
        return f"not compared ({error})"
    values = np.allclose(x["values"], y["values"], rtol=1e-6, atol=0)
    images = np.array_equal(x["image_index"], y["image_index"])
    return "yes" if values and images else f"NO (values equal: {values}, image indices equal: {images})"


def bench_memory_pipeline(args, folders: dict[str, Path]) -> None:
    print(f"\n(d) peak resident memory of the folder pipeline alone (fresh process, workers={args.workers}, "
          "VmHWM, MiB)")
    for label in ("1x", "10x"):
        if label not in folders:
            continue
        command = [sys.executable, __file__, "--_pipeline", str(folders[label]), "--workdir", args.workdir,
                   "--source", args.source, "--workers", str(args.workers), "--batch-size", str(args.batch_size),
                   "--threads", str(args.threads)]
        run = run_measured(command)
        if run["rc"] != 0:
            print(f"  {label}: failed:\n{run['output'][-2000:]}")
            continue
        info = json.loads(run["output"].strip().splitlines()[-1])
        print(f"  {label:>3}: {info['loaded'] + info['skipped']:6d} files, {info['rate']:6.0f} img/s, "
              f"{info['skipped']} skipped: {_memory_line(run['peak_mib'])}")


def bench_merge(args, src, folder: Path, repeats: int = 5) -> None:
    """What merging costs: two ranks' top-k states (of the first images; the state is k patches per
    channel whatever the number of images), pickled as all_gather_object sends them, and merged."""
    import pickle

    from kernelscope.analysis.passes import Batch
    from kernelscope.analysis.toppatches import TopPatchesReducer
    from kernelscope.data.folder import load_batches

    ds = src.image_folder(folder)
    n = min(len(ds), 4 * args.batch_size)
    states, start = [], time.perf_counter()
    for half in (np.arange(0, n // 2), np.arange(n // 2, n)):
        reducer = TopPatchesReducer(src.model, args.layer, 9, at=args.at)
        for found in load_batches(ds, half, batch_size=args.batch_size, normalise=src.normalise):
            reducer.update(Batch(found.indices, found.inputs, found.raw))
        states.append(reducer.state())
    per_image = (time.perf_counter() - start) / n
    pickle_s, merge_s = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        sent = [pickle.loads(pickle.dumps(state)) for state in states]
        pickle_s.append(time.perf_counter() - t)
        merged = TopPatchesReducer(src.model, args.layer, 9, at=args.at)
        t = time.perf_counter()
        merged.merge(sent)
        merge_s.append(time.perf_counter() - t)
    size = len(pickle.dumps(states[0]))
    pickling, merging = float(np.median(pickle_s)), float(np.median(merge_s))
    print(f"\n(e) merge overhead, 2 ranks, layer {args.layer}, k=9 (medians of {repeats})")
    print(f"  one image of the pass (baseline)   {per_image * 1e3:8.1f} ms")
    print(f"  state of one rank                  {size / 2**20:8.2f} MiB (k patches per channel: "
          "does not grow with the images)")
    print(f"  pickle + unpickle both states      {pickling * 1e3:8.1f} ms = {pickling / per_image:6.2f} images")
    print(f"  merge                              {merging * 1e3:8.1f} ms = {merging / per_image:6.2f} images")
    print(f"  over {args.n} images: {(pickling + merging) / (per_image * args.n):.4%} of a 1-process pass "
          "(the transfer itself: one all_gather_object of the states above)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="images in the 1x folder (>= 5,000 for the figures)")
    parser.add_argument("--side", type=int, default=128, help="side of the images, px")
    parser.add_argument("--tenfold", action="store_true", help="also measure memory at 10x the images")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the passes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the in-process measures")
    parser.add_argument("--source", default="resnet18", help="resnet18 (random weights) or a SOURCE name")
    parser.add_argument("--layer", default=None, help="default: layer2.1.conv2 (resnet18), else the deepest")
    parser.add_argument("--at", default="activation", choices=["activation", "conv"])
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "kernelscope-bench-scale"))
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: a,b,c,d,e")
    parser.add_argument("--_pipeline", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._pipeline:
        child_pipeline(args)
        return
    import torch

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    skip = set(args.skip.split(","))
    src, source_args = open_network(args, workdir)
    args.layer = args.layer or ("layer2.1.conv2" if args.source == "resnet18" else src.pick_layer(None))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, source {src.label}, layer {args.layer}")
    info = make_folder(workdir / f"images-{args.n}", args.n, args.side)
    folders = {"1x": workdir / f"images-{args.n}", "tiny": workdir / "images-32"}
    make_folder(folders["tiny"], 32, args.side)
    print(f"folder {folders['1x']}: {info['files']} files ({info['corrupt']} truncated) cut from "
          f"{len(info['photos'])} bundled photos at {args.side} px (made in {info['seconds']} s)")
    if args.tenfold:
        folders["10x"] = workdir / f"images-{args.n}-x10"
        count = tenfold_folder(folders["1x"], folders["10x"])
        print(f"folder {folders['10x']}: {count} files (hard links)")
    if "a" not in skip:
        bench_pipeline(args, src, folders["1x"])
    if "b" not in skip:
        bench_pass_in_process(args, src, folders["1x"])
    if "c" not in skip:
        bench_cli(args, source_args, folders, workdir)
    if "d" not in skip:
        bench_memory_pipeline(args, folders)
    if "e" not in skip:
        bench_merge(args, src, folders["1x"])


if __name__ == "__main__":
    main()
