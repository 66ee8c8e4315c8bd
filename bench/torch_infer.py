"""The official PyTorch T2T-ViT code's forward pass, timed on request: a contender of bench/cpu_bench.ts.

    /usr/bin/python3 bench/torch_infer.py OFFICIAL_DIR MODEL WEIGHTS.pth INPUT.bin BATCH THREADS LOGITS.bin

OFFICIAL_DIR holds the authors' models/ folder (a clone of their repository; not part of this project); the
timm functions it imports come from bench/torch_shim. The model loads WEIGHTS.pth (a plain state dict written
by bench/cpu_bench.ts: the same weights every contender runs), runs the input in INPUT.bin (BATCH x 3 x 224 x
224 float32) once (the first call, timed) and writes its logits to LOGITS.bin; then it answers the parent on
stdin/stdout: `run N` -> `times t1,t2,...` (milliseconds of N forward passes), `quit` -> exits.
"""
import os
import sys
import time

import torch

official, model_name, weights, input_path, batch, threads, logits_path = sys.argv[1:8]
batch, threads = int(batch), int(threads)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_shim"))
sys.path.insert(0, official)
torch.set_num_threads(threads)
import models  # noqa: E402,F401  (registers the factories)
from timm.models.registry import _models  # noqa: E402

t0 = time.perf_counter()
net = _models[model_name]()
net.load_state_dict(torch.load(weights, weights_only=True), strict=True)
net.eval()
load_ms = (time.perf_counter() - t0) * 1000
with open(input_path, "rb") as f:
    x = torch.frombuffer(bytearray(f.read()), dtype=torch.float32).reshape(batch, 3, 224, 224)
with torch.no_grad():
    t0 = time.perf_counter()
    y = net(x)
    first_ms = (time.perf_counter() - t0) * 1000
with open(logits_path, "wb") as f:
    f.write(y.contiguous().numpy().tobytes())
print(f"ready {load_ms:.3f} {first_ms:.3f}", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "quit":
        break
    times = []
    with torch.no_grad():
        for _ in range(int(cmd[1])):
            t0 = time.perf_counter()
            net(x)
            times.append((time.perf_counter() - t0) * 1000)
    print("times " + ",".join(f"{t:.3f}" for t in times), flush=True)
