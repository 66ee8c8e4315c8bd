"""The official PyTorch T2T-ViT code's training step, timed: the contender of bench/train_bench.ts.

    /usr/bin/python3 bench/torch_train_step.py OFFICIAL_DIR MODEL BATCH IMG_SIZE STEPS THREADS

OFFICIAL_DIR holds the authors' models/ folder (a clone of their repository; not part of this project); the
timm functions it imports come from bench/torch_shim. One SGD step as transfer_learning.py takes it
(momentum 0.9, weight decay 5e-4, drop-path 0.1, 10 classes, cross-entropy), on random images: one untimed
first step, then STEPS timed ones. Prints one JSON line.
"""
import json
import os
import sys
import time

import torch

official, model_name, batch, img, steps, threads = sys.argv[1:7]
batch, img, steps, threads = int(batch), int(img), int(steps), int(threads)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_shim"))
sys.path.insert(0, official)
torch.set_num_threads(threads)
torch.manual_seed(0)
import models  # noqa: E402,F401  (registers the factories)
from timm.models.registry import _models  # noqa: E402

net = _models[model_name](num_classes=10, img_size=img, drop_path_rate=0.1)
net.train()
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
loss_fn = torch.nn.CrossEntropyLoss()
x = torch.randn(batch, 3, img, img)
y = torch.arange(batch) % 10
times = []
for _ in range(steps + 1):
    t0 = time.perf_counter()
    opt.zero_grad()
    loss = loss_fn(net(x), y)
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - t0)
    print(f"pytorch {model_name}: step {len(times)} {times[-1]:.1f} s", file=sys.stderr)
step_s = sum(times[1:]) / max(1, len(times) - 1)
print(json.dumps({
    "backend": "pytorch", "kernels": False, "threads": threads, "model": model_name, "batch": batch,
    "microBatch": batch, "imgSize": img, "firstStepS": times[0], "stepS": step_s,
    "imagesPerSecond": batch / step_s, "torch": torch.__version__,
}))
