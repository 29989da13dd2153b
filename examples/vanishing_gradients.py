"""Nielsen's vanishing-gradient experiment ("Neural Networks and Deep Learning", chapter 5) on the shipped digits.

python examples/vanishing_gradients.py                        # speeds at initialisation, then 300 epochs
python examples/vanishing_gradients.py --epochs 20 --plot speeds.png

The "speed of learning" of hidden layer l is ‖∂E/∂b_l‖, the length of its bias
gradient (gpubp.learning_speeds). In sigmoid networks with Nielsen's
initialisation (weights N(0, 1/n_in), biases N(0, 1), sigmoid outputs with
cross-entropy) each earlier hidden layer learns several times slower than the
next. With ReLU and He's initialisation the speeds stay close to each other.
"""

import argparse

import numpy as np

import gpubp
from gpubp import datasets
from gpubp.plot import require_matplotlib

parser = argparse.ArgumentParser(description="Each hidden layer's speed of learning, sigmoid against ReLU.")
parser.add_argument("--epochs", type=int, default=300, help="full-batch gradient descent epochs (default: 300)")
parser.add_argument("--lr", type=float, default=0.1, help="learning rate (default: 0.1)")
parser.add_argument("--plot", default="vanishing_gradients.png", help="where to draw the speeds per epoch")
parser.add_argument("--device", default="cpu", help="auto, cpu, gpu or cuda:N (default: cpu)")
args = parser.parse_args()

X, y = datasets.digits()
X = X / 16  # pixels in [0, 1], as Nielsen's MNIST
Y = np.eye(10)[y]  # one sigmoid output per class, with (binary) cross-entropy, as Nielsen's network2
SHAPES = [[64, 30, 10], [64, 30, 30, 10], [64, 30, 30, 30, 10], [64, 30, 30, 30, 30, 10]]


def network(sizes, activation, seed=0):
    """Nielsen's initialisation for sigmoid nets; He's (gpubp's default for ReLU) otherwise."""
    net = gpubp.MLP(sizes, activation=activation, output_activation="sigmoid", loss="bce", dtype="float64",
                    device=args.device, seed=seed)  # fmt: skip
    if activation == "sigmoid":
        rng = np.random.default_rng(seed)
        for W, b in zip(net.weights, net.biases):
            W[...] = net.device.asarray(rng.normal(0, 1 / np.sqrt(W.shape[0]), size=W.shape))
            b[...] = net.device.asarray(rng.normal(0, 1, size=b.shape))
    return net


def table(activation):
    print(f"{activation}: each hidden layer's speed of learning at initialisation, first layer first")
    for sizes in SHAPES:
        hidden = gpubp.learning_speeds(network(sizes, activation), X, Y)[:-1]  # the output layer is not hidden
        ratios = [f"{b / a:.1f}" for a, b in zip(hidden, hidden[1:])]
        shown = ", ".join(f"{s:.3f}" for s in hidden)
        print(f"  {str(sizes):24} {shown:36} each next layer ÷ this: {', '.join(ratios) or '-'}")


table("sigmoid")
table("relu")

curves = {}
for activation in ("sigmoid", "relu"):
    net = network(SHAPES[-1], activation)
    history = gpubp.fit(net, X, Y, epochs=args.epochs, batch_size=len(X), optimizer=gpubp.SGD(net, lr=args.lr),
                        callbacks=[gpubp.LayerMonitor()], progress=False)  # fmt: skip
    curves[activation] = [[layers[l]["speed"] for layers in history.layers] for l in range(net.n_layers - 1)]
    last = ", ".join(f"{c[-1]:.4f}" for c in curves[activation])
    accuracy = np.mean(gpubp.to_numpy(net.predict(X)).argmax(axis=1) == y)
    print(f"{activation} {SHAPES[-1]} after {args.epochs} epochs: speeds {last}; training accuracy {accuracy:.1%}")

plt = require_matplotlib()
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, (activation, speeds) in zip(axes, curves.items()):
    for l, curve in enumerate(speeds):
        ax.plot(range(1, len(curve) + 1), curve, label=f"hidden layer {l + 1}")
    ax.set_yscale("log")
    ax.set_title(f"{activation}, {SHAPES[-1]}, full-batch gradient descent")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
axes[0].set_ylabel("speed of learning ‖∂E/∂b‖")
fig.tight_layout()
fig.savefig(args.plot, dpi=100)
print(f"saved the speeds per epoch to {args.plot}")
