"""A research loop written by hand: forward, backward and step, with the blame of every layer inspected.

python examples/custom_training_loop.py [--steps 200] [--device auto]
"""

import argparse

import numpy as np

import gpubp

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--device", default="auto")
args = parser.parse_args()

X, y = gpubp.datasets.spirals(n=100, classes=3, seed=0)
net = gpubp.MLP([2, 32, 16, 3], activation="tanh", loss="cross_entropy", dtype="float64", device=args.device)
opt = gpubp.SGD(net, lr=0.1, momentum=0.9)
X, Y = net.inputs(X), net.targets(y, len(y))  # on the device once, labels as one-hot rows
rng = np.random.default_rng(0)

for step in range(1, args.steps + 1):
    rows = net.device.asarray(rng.choice(len(X), size=32, replace=False))
    trace = net.forward(X[rows])  # trace.z[l] = a[l] @ W[l] + b[l]; trace.a[l+1] = f(z[l])
    grads = net.backward(trace, Y[rows])  # δ_L = (ŷ − y)/N; δ_l = (δ_{l+1} @ W_{l+1}ᵀ) ⊙ f'(z_l)
    if step == 1 or step % max(1, args.steps // 4) == 0:
        # How much blame reaches each layer: the mean |δ| per layer, output last.
        blame = [float(abs(d).mean()) for d in grads.deltas]
        print(
            f"step {step:>4}  E = {net.loss(trace.output, Y[rows]):.4f}  mean |δ| by layer: "
            + "  ".join(f"{b:.2e}" for b in blame)
        )
    opt.step(grads)  # W_new = W_old − lr × ∂E/∂W

accuracy = gpubp.evaluate(net, X, Y)["accuracy"]
print(f"accuracy on all {len(X)} points: {accuracy:.1%} ({net.device})")
