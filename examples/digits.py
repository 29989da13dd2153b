"""Train on the 8×8 digits that ship with gpubp, with fit, early stopping and a saved model.

python examples/digits.py [--epochs 40] [--device auto] [--save digits.safetensors]
"""

import argparse

import gpubp
from gpubp import datasets

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=40)
parser.add_argument("--device", default="auto")
parser.add_argument("--save", default="digits.safetensors")
args = parser.parse_args()

X, y = datasets.digits()
X_train, X_test, y_train, y_test = datasets.train_test_split(X, y, test_size=0.2, seed=0)
X_train, X_val, y_train, y_val = datasets.train_test_split(X_train, y_train, test_size=0.1, seed=0)
scaler = datasets.Standardizer(per_feature=False).fit(X_train)  # one scale for all pixels

net = gpubp.MLP([64, 256, 10], activation="relu", loss="cross_entropy", device=args.device)
history = gpubp.fit(
    net,
    scaler.transform(X_train),
    y_train,
    epochs=args.epochs,
    batch_size=32,
    optimizer=gpubp.SGD(net, lr=0.1, momentum=0.9, weight_decay=1e-4),
    validation_data=(scaler.transform(X_val), y_val),
    callbacks=[gpubp.CosineLR(), gpubp.EarlyStopping(patience=10)],
)
test = gpubp.evaluate(net, scaler.transform(X_test), y_test)
print(f"{len(history)} epochs, test accuracy {test['accuracy']:.2%} on {net.device}")
gpubp.save(net, args.save, standardizer=scaler.to_dict())
print(f"saved to {args.save}")
