"""gpubp's MLPClassifier in a scikit-learn pipeline and grid search, on the GPU when one is usable.

python examples/sklearn_pipeline.py                 # device="auto"
python examples/sklearn_pipeline.py --device cpu --max-iter 50

Needs the sklearn extra: pip install 'gpubp[sklearn]'.
"""

import argparse
import warnings

from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gpubp import datasets
from gpubp.sklearn import MLPClassifier

parser = argparse.ArgumentParser(description="A scikit-learn grid search over gpubp's MLPClassifier on the digits.")
parser.add_argument("--device", default="auto", help="auto, cpu, gpu or cuda:N (default: auto)")
parser.add_argument("--max-iter", type=int, default=100, help="epochs per fit (default: 100)")
args = parser.parse_args()

X, y = datasets.digits()
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)

# The same parameters as sklearn.neural_network.MLPClassifier, plus device.
pipeline = make_pipeline(StandardScaler(), MLPClassifier(max_iter=args.max_iter, random_state=0, device=args.device))
grid = {"mlpclassifier__hidden_layer_sizes": [(64,), (128,)], "mlpclassifier__alpha": [1e-4, 1e-2]}
search = GridSearchCV(pipeline, grid, cv=3)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # a short run on purpose
    search.fit(X_train, y_train)

model = search.best_estimator_[-1]
print(f"best: {search.best_params_}")
print(f"test accuracy {search.score(X_test, y_test):.2%} on {model.net_.device}")
print(f"epochs {model.n_iter_}, final loss {model.loss_:.4f}, weights {[c.shape for c in model.coefs_]}")
