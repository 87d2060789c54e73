#!/usr/bin/env bash
# GPU smoke test and throughput on a lent CUDA machine (device=auto must pick CUDA).
# Expects wheels for packages the GPU image lacks (mlxtend, platformdirs, torchattacks) in .whl/.
set -x
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
nvidia-smi -L
python3 benchmarks/bench_throughput.py --device auto --out $OUT/gpu_throughput.json
python3 benchmarks/bench_throughput.py --device cpu --repeats 1 --out $OUT/gpucpu_throughput.json 2>/dev/null | tail -3
ROBUSTVAE_CACHE=/tmp/cache python3 - <<'PY'
import time, robustvae as rv, torch
dev = rv.setup(seed=0, device="auto")
print("device", dev)
t = time.time(); clf, h = rv.get_classifier(device="auto"); print("classifier", round(time.time()-t,1), "s, acc", round(h["test_acc"][-1],3))
t = time.time(); vae, h = rv.get_vae(device="auto"); print("vae", round(time.time()-t,1), "s, test elbo", round(h["test_elbo"][-1],2))
x, y = rv.load_dataset("mnist-5k", "test")
xb, yb = x[:500].to(dev), y[:500].to(dev)
xa = rv.attacks.pgd(clf, xb, yb, 0.3, steps=40)
print("pgd acc", (clf(xa).argmax(1)==yb).float().mean().item())
xd = rv.attacks.max_damage(vae, xb[:100], 2.0, steps=50)
print("max damage dist", rv.attacks.reconstruction_distance(vae, xd, xb[:100]).mean().item())
with torch.no_grad(): print("iwae", vae.iwae(xb, k=64).mean().item())
PY
