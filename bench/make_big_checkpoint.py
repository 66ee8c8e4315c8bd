#!/usr/bin/env python3
"""Makes the large benchmark checkpoint for bench/convert_bench.ts with Debian's python3-torch.

    apt-get install -y python3-torch
    /usr/bin/python3 bench/make_big_checkpoint.py [variant] [out.pth.tar] [--legacy]

Writes a checkpoint in the layout of the authors' released files (timm CheckpointSaver: epoch, arch,
state_dict, version, args as an argparse.Namespace, metric, state_dict_ema) for `variant` (default
t2t_vit_24), with every key and shape of that variant from tests/fixtures/reference/manifest.json, random
normal weights (seed 0) and `state_dict_ema = state_dict + 1e-3`. t2t_vit_24 gives a file of about 513 MB.
With --legacy it is written in the pre-1.6 serialization (`_use_new_zipfile_serialization=False`). The output
goes to bench/out/ (git-ignored); never commit it. Then times torch.load on it for comparison.
"""
import argparse
import collections
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(HERE, "..", "tests", "fixtures", "reference", "manifest.json")


def main():
    legacy = "--legacy" in sys.argv
    argv = [a for a in sys.argv[1:] if a != "--legacy"]
    variant = argv[0] if len(argv) > 0 else "t2t_vit_24"
    default = f"{variant}{'-legacy' if legacy else ''}.pth.tar"
    out = argv[1] if len(argv) > 1 else os.path.join(HERE, "out", default)
    with open(MANIFEST) as f:
        entry = json.load(f)[variant]
    gen = torch.Generator().manual_seed(0)
    sd = collections.OrderedDict(
        (k, torch.randn(*shape, generator=gen) * 0.02) for k, shape in entry["state_dict"])
    ema = collections.OrderedDict((k, v + 1e-3) for k, v in sd.items())
    args = argparse.Namespace(model=variant, lr=5e-4, weight_decay=0.05, epochs=310, img_size=entry["img_size"],
                              model_ema=True, model_ema_decay=0.99996, batch_size=64, opt="adamw")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save({"epoch": 309, "arch": variant, "state_dict": sd, "version": 2, "args": args, "metric": 82.6,
                "state_dict_ema": ema}, out, _use_new_zipfile_serialization=not legacy)
    print(f"wrote {out}: {os.path.getsize(out):,} bytes, {len(sd)} tensors x 2")
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        torch.load(out, map_location="cpu")
        best = min(best, time.perf_counter() - t)
    print(f"torch {torch.__version__}: torch.load best of 3: {best:.3f} s")


if __name__ == "__main__":
    main()
