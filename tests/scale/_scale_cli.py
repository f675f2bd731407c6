"""The patches, dissect and shift commands one after another in one ``torchrun`` launch (a launch costs
seconds): the process group is joined once here, so the commands find it and leave it alone.

``python _scale_cli.py OUT RUN IMAGES MASKS OOD``: each command writes into OUT/<command>; the last
reads the image folder RUN/folder (one file in it is not an image).
"""

from __future__ import annotations

import sys


def commands(out: str, run: str, images: str, masks: str, ood: str) -> list[list[str]]:
    common = ["--batch-size", "8", "--device", "cpu"]
    return [
        ["patches", run, "--images", images, "-k", "3", *common, "--out", f"{out}/patches"],
        ["dissect", run, "--images", images, "--masks", masks, "--layer", "features.0", "--permutations", "3",
         *common, "--out", f"{out}/dissect"],
        ["shift", run, "--id", images, "--ood", ood, "--no-mahalanobis", "--bootstrap", "50", *common,
         "--out", f"{out}/shift"],
        ["patches", run, "--images", f"{run}/folder", "-k", "2", "--workers", "1", *common,
         "--out", f"{out}/folder"],
        ["correlation", run, "--images", images, "--layer", "features.5", *common,
         "--out", f"{out}/correlation"],
        ["maps", run, "--images", f"{run}/folder", "--index", "3", "--device", "cpu", "--out", f"{out}/maps"],
    ]


if __name__ == "__main__":
    import torch

    from kernelscope.cli import cli
    from kernelscope.train.distributed import setup, teardown

    torch.set_num_threads(1)
    context = setup("cpu")
    try:
        for args in commands(*sys.argv[1:6]):
            cli.main(args=args, standalone_mode=False)
    finally:
        teardown(context)
