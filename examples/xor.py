"""Train the classic 2-4-1 sigmoid network on XOR, on the best device at hand.

python examples/xor.py                 # auto: the GPU if usable, else the CPU
python examples/xor.py --device cpu --steps 3000
"""

import argparse
import time

import numpy as np

import gpubp

parser = argparse.ArgumentParser(description="Learn XOR with a 2-4-1 sigmoid MLP.")
parser.add_argument("--device", default="auto", help="auto, cpu, gpu or cuda:N (default: auto)")
parser.add_argument("--steps", type=int, default=3000, help="full-batch SGD steps (default: 3000)")
parser.add_argument("--lr", type=float, default=2.0, help="learning rate (default: 2.0)")
args = parser.parse_args()

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
Y = np.array([0, 1, 1, 0], dtype=np.float32)

net = gpubp.MLP([2, 4, 1], activation="sigmoid", loss="mse", device=args.device, seed=0)
opt = gpubp.SGD(net, lr=args.lr)
X_dev, Y_dev = net.inputs(X), net.targets(Y, len(Y))  # to the device once
print(f"training {net} for {args.steps} steps")

start = time.perf_counter()
for step in range(1, args.steps + 1):
    trace = net.forward(X_dev)
    opt.step(net.backward(trace, Y_dev))
    if step % max(1, args.steps // 5) == 0:
        print(f"step {step:>6}  loss {net.loss(trace.output, Y_dev):.6f}")
seconds = time.perf_counter() - start

output = gpubp.to_numpy(net.predict(X_dev))[:, 0]
for x, y, p in zip(X, Y, output):
    print(f"{x.astype(int)} -> {p:.3f} (target {int(y)})")
accuracy = float(np.mean((output > 0.5) == (Y > 0.5)))
print(f"accuracy {accuracy:.0%} on {net.device} in {seconds:.2f} s")
