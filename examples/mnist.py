"""MNIST: 60,000 handwritten digits, 784 pixels each, on the best device at hand.

    python examples/mnist.py --download            # fetch once into ~/.cache/gpubp/mnist
    python examples/mnist.py --dir PATH            # or read the IDX files from a folder

Set GPUBP_MNIST_URL to use another mirror; every file is checked against its SHA-256.
"""

import argparse

import gpubp
from gpubp import datasets

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--dir", help="folder holding the four IDX files (gzipped or not)")
parser.add_argument("--download", action="store_true", help="download the files if they are missing")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--hidden", type=int, default=512)
parser.add_argument("--device", default="auto")
args = parser.parse_args()

X_train, y_train, X_test, y_test = datasets.mnist(path=args.dir, download=args.download)
scaler = datasets.Standardizer(per_feature=False).fit(X_train)
net = gpubp.MLP([784, args.hidden, 10], activation="relu", loss="cross_entropy", device=args.device)
gpubp.fit(
    net,
    scaler.transform(X_train),
    y_train,
    epochs=args.epochs,
    batch_size=128,
    optimizer=gpubp.SGD(net, lr=0.1, momentum=0.9, weight_decay=1e-4),
    callbacks=[gpubp.CosineLR()],
)
test = gpubp.evaluate(net, scaler.transform(X_test), y_test)
print(f"MNIST test accuracy {test['accuracy']:.2%} on {net.device}")
