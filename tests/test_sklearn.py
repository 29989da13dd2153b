"""gpubp.sklearn: scikit-learn's own estimator checks, and the same training trajectory as scikit-learn's MLP."""

import pickle
import sys
import warnings

import numpy as np
import pytest

from .conftest import require_gpu, require_tool

try:
    import sklearn.neural_network as reference
    from sklearn.base import clone
    from sklearn.utils.estimator_checks import check_dataframe_column_names_consistency, parametrize_with_checks

    from gpubp.sklearn import MLPClassifier, MLPRegressor
except ImportError:
    require_tool("the sklearn extra is not installed: pip install 'gpubp[sklearn]'")

import gpubp

ESTIMATORS = [MLPClassifier(device="cpu"), MLPRegressor(device="cpu")]


@parametrize_with_checks(ESTIMATORS)  # every check: no expected failures
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checks train for few iterations: ConvergenceWarning is expected
        check(estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_dataframe_column_names_consistency(estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_dataframe_column_names_consistency(type(estimator).__name__, estimator)


# --- the same trajectory as scikit-learn --------------------------------------------------------

RNG = np.random.default_rng(0)
X = RNG.normal(size=(150, 6))
TARGETS = {
    "binary": (X[:, 0] + X[:, 1] > 0).astype(int),
    "multiclass": RNG.integers(0, 4, 150),
    "multilabel": (X[:, :3] > 0).astype(int),
    "regression": X @ RNG.normal(size=6) + 0.1 * RNG.normal(size=150),
    "two outputs": X[:, :2] * 2,
}
SOLVERS = {
    "sgd": {"solver": "sgd", "momentum": 0.0, "learning_rate_init": 0.05},
    "momentum": {"solver": "sgd", "momentum": 0.9, "nesterovs_momentum": False, "learning_rate_init": 0.01},
    "nesterov": {"solver": "sgd", "momentum": 0.9, "learning_rate_init": 0.01},
    "adam": {"solver": "adam", "learning_rate_init": 0.01},
    "lbfgs": {"solver": "lbfgs"},
    "invscaling": {"solver": "sgd", "learning_rate": "invscaling", "learning_rate_init": 0.5},
    "adaptive": {"solver": "sgd", "learning_rate": "adaptive", "tol": 0.1, "n_iter_no_change": 1, "momentum": 0.5},
    "early stopping": {"solver": "adam", "early_stopping": True, "learning_rate_init": 0.01},
}


def both(task, **options):
    """scikit-learn's estimator and gpubp's, with the same options."""
    kind = "MLPRegressor" if task in ("regression", "two outputs") else "MLPClassifier"
    options = {"hidden_layer_sizes": (8, 5), "activation": "tanh", "alpha": 0.01, "batch_size": 32,
               "random_state": 3, "max_iter": 12} | options  # fmt: skip
    return getattr(reference, kind)(**options), getattr(sys.modules["gpubp.sklearn"], kind)(device="cpu", **options)


def assert_same_weights(theirs, ours, tolerance=1e-9):
    for a, b in zip(theirs.coefs_ + theirs.intercepts_, ours.coefs_ + ours.intercepts_):
        assert np.abs(a - b).max() <= tolerance * np.abs(a).max()


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("task", list(TARGETS))
def test_the_same_trajectory_as_scikit_learn(task, solver):
    theirs, ours = both(task, **SOLVERS[solver])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.fit(X, TARGETS[task])
        ours.fit(X, TARGETS[task])
    assert_same_weights(theirs, ours)  # the same initial draw, shuffles, batches, updates and stopping
    assert ours.n_iter_ == theirs.n_iter_ and ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    if solver != "lbfgs":
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
        assert ours.t_ == theirs.t_
    if solver == "early stopping":
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=1e-9)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("solver", ["sgd", "momentum", "nesterov", "adam"])
def test_warm_started_from_the_same_weights_with_sample_weights(task, solver):
    theirs, ours = both(task, warm_start=True, shuffle=False, max_iter=1, **SOLVERS[solver])
    y = TARGETS[task]
    weights = RNG.uniform(0.2, 3.0, len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.fit(X, y)
        ours.fit(X, y)
        start = [w + np.sin(np.arange(w.size).reshape(w.shape)) * 0.3 for w in theirs.coefs_]
        theirs.coefs_ = [w.copy() for w in start]  # both start again from these weights
        ours.coefs_ = start
        for _ in range(5):  # several epochs, each a warm-started fit
            theirs.fit(X, y, sample_weight=weights)
            ours.fit(X, y, sample_weight=weights)
    assert_same_weights(theirs, ours)


def test_partial_fit_follows_scikit_learn_and_needs_classes_first():
    theirs, ours = both("multiclass", solver="adam", learning_rate_init=0.01)
    y = TARGETS["multiclass"]
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        clone(ours).partial_fit(X, y)
    for chunk in range(3):
        rows = slice(50 * chunk, 50 * chunk + 50)
        theirs.partial_fit(X[rows], y[rows], classes=[0, 1, 2, 3])
        ours.partial_fit(X[rows], y[rows], classes=[0, 1, 2, 3])
    assert_same_weights(theirs, ours)
    assert ours.t_ == theirs.t_ == 150 and ours.n_iter_ == 1
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")


def test_assigned_coefs_are_what_predict_uses():
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, TARGETS["multiclass"])
    clf.coefs_ = [np.zeros_like(c) for c in clf.coefs_]
    clf.intercepts_[0] = np.ones(4)  # one layer at a time, as scikit-learn's lists allow
    clf.intercepts_[1] = np.zeros(4)
    assert clf.intercepts_[0].tolist() == [1, 1, 1, 1]
    np.testing.assert_allclose(clf.predict_proba(X), 0.25)  # every class equally likely
    with pytest.raises(ValueError, match=r"coefs_ must be arrays of shapes \[\(6, 4\), \(4, 4\)\]"):
        clf.coefs_ = [np.zeros((2, 2))]
    assert isinstance(clf.net_, gpubp.MLP) and clf.net_.sizes == (6, 4, 4)


def test_pipeline_and_grid_search_choose_and_score_as_scikit_learns():
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    digits_X, digits_y = gpubp.datasets.digits()
    digits_X = digits_X.astype(np.float64)
    results = []
    for estimator in (reference.MLPClassifier(max_iter=30, random_state=0),
                      MLPClassifier(max_iter=30, random_state=0, device="cpu")):  # fmt: skip
        search = GridSearchCV(make_pipeline(StandardScaler(), estimator), {"mlpclassifier__alpha": [1e-4, 1.0]}, cv=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            search.fit(digits_X[:600], digits_y[:600])
        results.append((search.best_params_, search.score(digits_X[600:900], digits_y[600:900])))
    assert results[1][0] == results[0][0] and results[1][1] == pytest.approx(results[0][1], abs=1e-12)
    assert results[1][1] > 0.8


def test_pickle_and_clone_and_a_gpu_model_opening_on_the_cpu():
    reg = MLPRegressor(hidden_layer_sizes=(6,), solver="sgd", learning_rate="invscaling", learning_rate_init=0.5,
                       device="cpu", random_state=1)  # fmt: skip
    for _ in range(3):
        reg.partial_fit(X, TARGETS["regression"])
    again = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(again.predict(X), reg.predict(X))
    for _ in range(3):  # the optimizer came along: its momentum, its schedule, the lr its velocity is scaled by
        again.partial_fit(X, TARGETS["regression"])
        reg.partial_fit(X, TARGETS["regression"])
    np.testing.assert_array_equal(again.predict(X), reg.predict(X))
    assert clone(reg).get_params() == reg.get_params() and not hasattr(clone(reg), "net_")
    # A model saved on cuda:0, staged: the same state, saying it came from a GPU.
    state = reg.__getstate__()
    state["_net_state"]["device"] = "cuda:0"
    if gpubp.gpu_available(0):
        pytest.skip("a GPU is usable here: this part is about machines without one")
    opened = MLPRegressor.__new__(MLPRegressor)
    with pytest.warns(UserWarning, match="fitted on cuda:0, which is not usable here: loaded onto the CPU"):
        opened.__setstate__(state)
    np.testing.assert_array_equal(opened.predict(X), reg.predict(X))


def test_pickling_survives_numpy_settings_and_a_solver_changed_to_lbfgs():
    # A grid search may hand over NumPy scalars; they must reach the checkpoint's JSON as plain numbers.
    sgd = MLPClassifier(hidden_layer_sizes=(5,), solver="sgd", learning_rate="invscaling", power_t=np.float32(0.5),
                        momentum=np.float64(0.8), max_iter=3, random_state=0, device="cpu")  # fmt: skip
    # Adam on float32 rows, then L-BFGS (which trains a float64 net) in the same estimator.
    switched = MLPRegressor(hidden_layer_sizes=(5,), solver="adam", warm_start=True, max_iter=3, random_state=0,
                            device="cpu")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sgd.fit(X, TARGETS["multiclass"])
        switched.fit(X.astype(np.float32), TARGETS["regression"])
        switched.set_params(solver="lbfgs").fit(X.astype(np.float32), TARGETS["regression"])
    for estimator in (sgd, switched):
        again = pickle.loads(pickle.dumps(estimator))
        np.testing.assert_array_equal(again.predict(X), estimator.predict(X))


def test_import_gpubp_does_not_import_scikit_learn():
    import subprocess

    code = "import sys, gpubp; print('sklearn' in sys.modules, 'scipy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "False"], result.stderr


@pytest.mark.gpu
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_the_gpu_follows_the_cpu(solver):
    require_gpu()
    cpu = MLPClassifier(hidden_layer_sizes=(16,), solver=solver, max_iter=10, random_state=0, device="cpu")
    gpu = clone(cpu).set_params(device="gpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu.fit(X, TARGETS["multiclass"])
        gpu.fit(X, TARGETS["multiclass"])
    assert str(gpu.net_.device).startswith("cuda")
    assert_same_weights(cpu, gpu, tolerance=1e-10)
    assert isinstance(gpu.predict_proba(X), np.ndarray)


@pytest.mark.parametrize(
    "options",
    [{"batch_size": 0}, {"max_iter": 0}, {"alpha": -1.0}, {"epsilon": 0.0}, {"shuffle": "yes"},
     {"momentum": 2.0}, {"validation_fraction": 1.5}, {"solver": "newton"}],
)  # fmt: skip
def test_bad_parameters_are_refused_as_scikit_learn_refuses_them(options):
    from sklearn.utils._param_validation import InvalidParameterError

    messages = []
    for estimator in (reference.MLPClassifier(**options), MLPClassifier(device="cpu", **options)):
        with pytest.raises(InvalidParameterError) as refused:
            estimator.fit(X, TARGETS["binary"])
        messages.append(str(refused.value))
    assert messages[1] == messages[0]  # scikit-learn's own words
    # gpubp takes every option that scikit-learn's constraints let through
    from gpubp import sklearn as gpubp_sklearn

    constraints = reference.MLPClassifier._parameter_constraints
    assert constraints["activation"][0].options == set(gpubp_sklearn.ACTIVATIONS)
    assert constraints["solver"][0].options == set(gpubp_sklearn.SOLVERS)
    assert constraints["learning_rate"][0].options == set(gpubp_sklearn.SCHEDULES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MLPClassifier(momentum=1.0, solver="sgd", max_iter=2, device="cpu").fit(X, TARGETS["binary"])  # allowed
    for estimator in (reference.MLPClassifier((5.5,)), MLPClassifier((5.5,), device="cpu")):
        with pytest.raises(TypeError):  # a layer of 5.5 units
            estimator.fit(X, TARGETS["binary"])


def test_a_warm_start_with_another_network_says_so():
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, warm_start=True, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg.fit(X, TARGETS["regression"])
        reg.set_params(hidden_layer_sizes=(3,))
        with pytest.raises(ValueError, match=r"holds a network of sizes \[6, 8, 1\].*ask for sizes \[6, 3, 1\]"):
            reg.fit(X, TARGETS["regression"])
        reg.set_params(warm_start=False).fit(X, TARGETS["regression"])  # a new network, as asked
    assert reg.net_.sizes == (6, 3, 1)


def test_lbfgs_from_float32_data_evaluates_in_float32_and_keeps_float64_weights():
    theirs, ours = both("multiclass", solver="lbfgs", max_iter=5)
    X32 = X.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.fit(X32, TARGETS["multiclass"])
        ours.fit(X32, TARGETS["multiclass"])
    assert ours.coefs_[0].dtype == theirs.coefs_[0].dtype == np.float64
    assert_same_weights(theirs, ours, tolerance=1e-5)  # float32 sums in another order: float32-sized differences
