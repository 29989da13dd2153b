"""scikit-learn's MLPClassifier and MLPRegressor, trained by gpubp's backpropagation on a GPU or a CPU.

    from gpubp.sklearn import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(256,), device="auto").fit(X, y)

The parameters, defaults, fitted attributes and mathematics are those of
sklearn.neural_network's estimators: its initialisation, its L2 penalty
(alpha·W / batch rows, none on intercepts), its Adam and momentum, its output
units, its learning-rate schedules and stopping rules. So from the same
weights both follow the same trajectory. Two parameters are gpubp's own:
device ("auto", "cpu", "gpu", "cuda:N") and dtype (None: float32 X trains in
float32, anything else in float64, as scikit-learn does). `net_` is the
underlying gpubp.MLP, for looking at every z, a and delta.

Needs the sklearn extra: pip install 'gpubp[sklearn]'. `import gpubp` never imports this module.
"""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy

from .errors import MissingDependency

# scikit-learn's own parameter constraints, sample-weight checks and L-BFGS report (the imports from
# private modules, stable since 1.2), so that bad values and warnings read exactly as scikit-learn's do.
try:
    import scipy.optimize
    import scipy.sparse
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network._multilayer_perceptron import BaseMultilayerPerceptron
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state, gen_batches, shuffle
    from sklearn.utils._param_validation import StrOptions
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import type_of_target, unique_labels
    from sklearn.utils.optimize import _check_optimize_result
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data
except ImportError as e:  # pragma: no cover - the message is the point
    raise MissingDependency(f"gpubp.sklearn needs scikit-learn and scipy: pip install 'gpubp[sklearn]' ({e})") from e

from . import checkpoint
from .backend import gpu_available, to_numpy
from .data import gather
from .network import MLP
from .optim import SGD, Adam

ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}  # sklearn: gpubp
OUTPUTS = {"identity": ("identity", "mse"), "logistic": ("sigmoid", "bce"), "softmax": ("softmax", "cross_entropy")}
SOLVERS = ("lbfgs", "sgd", "adam")
SCHEDULES = ("constant", "invscaling", "adaptive")


class _SklearnAdam(Adam):
    """scikit-learn's Adam: lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m / (√v + ε), which is PyTorch's with ε / √(1 − β₂ᵗ) for ε."""

    name = "scikit-learn Adam"

    def __init__(self, net, lr, betas, epsilon):
        super().__init__(net, lr=lr, betas=betas, eps=epsilon)
        self.epsilon = float(epsilon)  # plain numbers, for a checkpoint's JSON (a grid search may pass NumPy's)

    def hyperparameters(self) -> dict:
        return super().hyperparameters() | {"epsilon": self.epsilon}

    @classmethod
    def _built(cls, net, hyper):
        return cls(net, hyper["initial_lr"], tuple(hyper["betas"]), hyper["epsilon"])

    def step(self, grads) -> None:
        self.eps = self.epsilon / (1 - self.betas[1] ** (self.steps + 1)) ** 0.5
        super().step(grads)

    def iteration_ends(self, samples_seen: int) -> None:
        pass

    def stop(self) -> bool:
        return True


class _SklearnSGD(SGD):
    """scikit-learn's SGD, with its learning-rate schedule fixed when it is made, as scikit-learn's is.

    Its velocity holds −lr·v, so when lr changes, v is rescaled to keep that product.
    """

    name = "scikit-learn SGD"

    def __init__(self, net, lr, momentum, nesterov, schedule, power_t):
        super().__init__(net, lr=lr, momentum=min(momentum, 0.5), nesterov=nesterov and momentum > 0)
        self.momentum = float(momentum)  # scikit-learn allows momentum = 1, which gpubp.SGD's check does not
        self.schedule, self.power_t, self._velocity_lr = schedule, float(power_t), self.lr  # plain numbers

    def hyperparameters(self) -> dict:
        return super().hyperparameters() | {
            "schedule": self.schedule,
            "power_t": self.power_t,
            "velocity_lr": self._velocity_lr,
        }

    @classmethod
    def _built(cls, net, hyper):
        optimizer = cls(net, hyper["initial_lr"], hyper["momentum"], hyper["nesterov"], hyper["schedule"],
                        hyper["power_t"])  # fmt: skip
        optimizer._velocity_lr = hyper["velocity_lr"]
        return optimizer

    def step(self, grads) -> None:
        if self.velocity is not None and self.lr != self._velocity_lr:
            self.velocity *= self._velocity_lr / self.lr
            self._velocity_lr = self.lr
        super().step(grads)

    def iteration_ends(self, samples_seen: int) -> None:
        if self.schedule == "invscaling":
            self.lr = float(self.initial_lr) / (samples_seen + 1) ** self.power_t

    def stop(self) -> bool:
        """At no improvement: 'adaptive' divides lr by 5 and goes on, until lr ≤ 1e-6."""
        if self.schedule != "adaptive" or self.lr <= 1e-6:
            return True
        self.lr /= 5.0
        return False


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share: fit, partial_fit, the solvers and the fitted attributes."""

    # scikit-learn's very objects (its option sets print in one order within a process), plus device and dtype
    _parameter_constraints: dict = {
        **BaseMultilayerPerceptron._parameter_constraints,
        "device": [str],
        "dtype": [None, StrOptions({"float32", "float64"}), type],
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        device="auto",
        dtype=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.device = device
        self.dtype = dtype

    # --- the weights as scikit-learn shows them ----------------------------------------

    @property
    def coefs_(self) -> list:
        """The weight matrices, (n_in, n_out) each, as NumPy arrays (views of the weights on the CPU).

        coefs_ = [...] and coefs_[i] = W both set the weights that predict and a warm-started fit use.
        """
        return _Layers(self, self._net().weights, "coefs_")

    @coefs_.setter
    def coefs_(self, values) -> None:
        self._set_layers(values, self._net().weights, "coefs_")

    @property
    def intercepts_(self) -> list:
        """The bias vectors, one per layer, as NumPy arrays; assignable as coefs_ is."""
        return _Layers(self, self._net().biases, "intercepts_")

    @intercepts_.setter
    def intercepts_(self, values) -> None:
        self._set_layers(values, self._net().biases, "intercepts_")

    def _net(self) -> MLP:
        net = self.__dict__.get("net_")
        if net is None:
            raise AttributeError(f"this {type(self).__name__} is not fitted yet: call fit first")
        return net

    def _set_layers(self, values, targets, name) -> None:
        values = list(values)
        shapes = [tuple(t.shape) for t in targets]
        if [numpy.shape(v) for v in values] != shapes:
            raise ValueError(f"{name} must be arrays of shapes {shapes}; got {[numpy.shape(v) for v in values]}")
        net = self._net()
        with net.device.activate():
            for target, value in zip(targets, values):
                target[...] = net.device.asarray(numpy.asarray(value, dtype=net.dtype))

    # --- fitting ----------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Fit the model to X and y (and sample_weight), from fresh weights unless warm_start=True."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _check_params(self):
        self._validate_params()  # scikit-learn's InvalidParameterError, with its messages
        if self.dtype not in (None, "float32", "float64", numpy.float32, numpy.float64):
            raise ValueError(f"dtype must be None, 'float32' or 'float64'; got {self.dtype!r}")
        hidden = self.hidden_layer_sizes
        hidden = list(hidden) if hasattr(hidden, "__iter__") else [hidden]
        if any(h <= 0 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
        if not all(isinstance(h, Integral) for h in hidden):
            raise TypeError(f"hidden_layer_sizes must be whole numbers of units; got {hidden}")
        return [int(h) for h in hidden]

    def _fit(self, X, y, sample_weight, incremental):
        hidden = self._check_params()
        first_pass = "net_" not in self.__dict__ or (not self.warm_start and not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        if scipy.sparse.issparse(X):
            X = X.toarray()  # the network multiplies dense matrices
        dtype = drawn = numpy.dtype(self.dtype) if self.dtype is not None else X.dtype
        X = numpy.ascontiguousarray(X, dtype=dtype)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=numpy.float64)
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        self.n_outputs_ = y.shape[1]
        layer_units = [X.shape[1], *hidden, self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units, dtype, drawn)
        else:
            self._check_same_network(layer_units, dtype)
        y = y.astype(self.net_.dtype)
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, y, sample_weight)
        else:
            self._fit_stochastic(X, y, sample_weight, incremental)
        with self.net_.device.activate():
            finite = bool(self.net_.xp.isfinite(self.net_.params).all())
        if not finite:
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may"
                " contain large values and need to be preprocessed."
            )
        return self

    def _initialize(self, y, layer_units, dtype, drawn):
        """Fresh weights, drawn as scikit-learn draws them (rounded to `drawn`), and the attributes of a first fit."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = len(layer_units)
        if not is_classifier(self):
            self.out_activation_ = "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"
        output, loss = OUTPUTS[self.out_activation_]
        net = MLP(layer_units, ACTIVATIONS[self.activation], output, loss, dtype=dtype, device=self.device)
        factor = 2.0 if self.activation == "logistic" else 6.0  # Glorot's uniform bound, as scikit-learn has it
        with net.device.activate():  # the net's GPU, whichever is current
            for W, b in zip(net.weights, net.biases):
                fan_in, fan_out = W.shape
                bound = numpy.sqrt(factor / (fan_in + fan_out))
                W[...] = net.device.asarray(self._random_state.uniform(-bound, bound, (fan_in, fan_out)).astype(drawn))
                b[...] = net.device.asarray(self._random_state.uniform(-bound, bound, fan_out).astype(drawn))
            self._best_params = net.params.copy()
        self.net_ = net
        self.__dict__.pop("_optimizer", None)
        if self.solver != "lbfgs":
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -numpy.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = numpy.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _check_same_network(self, layer_units, dtype):
        """A warm start or partial_fit continues the network it has: say so when the parameters now ask for another."""
        net = self.net_
        asked = (tuple(layer_units), ACTIVATIONS[self.activation], numpy.dtype(dtype).name)
        have = (net.sizes, net.activation.name, net.dtype.name)
        if asked != have:
            raise ValueError(
                f"this {type(self).__name__} holds a network of sizes {list(have[0])}, activation "
                f"{have[1]!r} and dtype {have[2]}, but its parameters and data now ask for sizes "
                f"{list(asked[0])}, activation {asked[1]!r} and dtype {asked[2]}: set warm_start=False "
                "(or start partial_fit on a fresh estimator) to train a new one"
            )

    def _loss_and_grads(self, X, Y, weights, grads, decay, workspace=None):
        """scikit-learn's batch loss (a device scalar) and gradient, into `grads`, for rows X, Y on the device.

        `decay` is a Grads made once, for the L2 term to be written into instead of allocated each step.
        """
        net, xp = self.net_, self.net_.xp
        n = len(X)
        trace = net.forward(X, workspace, validate=False)
        total = n if weights is None else float(weights.sum())
        row_weights = None if weights is None else net.device.asarray(weights * (n / total), dtype=net.dtype)
        net.backward(trace, Y, out=grads, workspace=workspace, validate=False, row_weights=row_weights)
        penalty = 0
        for W, g, term in zip(net.weights, grads.weights, decay.weights):  # alpha·W / rows on the weights only
            g += xp.multiply(W, self.alpha / total, out=term)
            penalty = penalty + xp.vdot(W.ravel(), W.ravel())
        loss = _data_loss(xp, self.out_activation_, Y, trace.output, row_weights) + (0.5 * self.alpha) * penalty / total
        return loss

    def _fit_lbfgs(self, X, y, sample_weight):
        net = self.net_
        with net.device.activate():
            X_d, Y_d = net.inputs(X), net.device.asarray(y)
            grads, decay = net.new_grads(), net.new_grads()

            def loss_and_gradient(flat):
                net.params[...] = net.device.asarray(flat.astype(net.dtype))
                loss = self._loss_and_grads(X_d, Y_d, sample_weight, grads, decay)
                return float(loss), to_numpy(grads.flat).astype(numpy.float64)

            result = scipy.optimize.minimize(
                loss_and_gradient,
                to_numpy(net.params).astype(numpy.float64),
                method="L-BFGS-B",
                jac=True,
                options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol},
            )
            self.n_iter_ = _check_optimize_result("lbfgs", result, self.max_iter)
            self.loss_ = float(result.fun)
            if net.dtype != numpy.float64 and self.dtype is None:
                # SciPy evaluates in X's dtype but returns float64 weights, which scikit-learn keeps: so do we.
                net = self.net_ = _retyped(net, numpy.float64)
            with net.device.activate():
                net.params[...] = net.device.asarray(result.x.astype(net.dtype))
                self._best_params = net.params.copy()

    def _make_optimizer(self):
        if self.solver == "sgd":
            return _SklearnSGD(self.net_, self.learning_rate_init, self.momentum, self.nesterovs_momentum,
                               self.learning_rate, self.power_t)  # fmt: skip
        return _SklearnAdam(self.net_, self.learning_rate_init, (self.beta_1, self.beta_2), self.epsilon)

    def _fit_stochastic(self, X, y, sample_weight, incremental):
        net = self.net_
        if not incremental or "_optimizer" not in self.__dict__:
            self._optimizer = self._make_optimizer()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        X_val = y_val = weight_val = None
        X_train, y_train, weight_train = X, y, sample_weight
        if self.early_stopping:
            stratify = y if is_classifier(self) and self.n_outputs_ == 1 else None
            arrays = (X, y) if sample_weight is None else (X, y, sample_weight)
            split = train_test_split(
                *arrays, random_state=self._random_state, test_size=self.validation_fraction, stratify=stratify
            )
            X_train, X_val, y_train, y_val = split[:4]
            if sample_weight is not None:
                weight_train, weight_val = split[4:]
            if X_val.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."
                )
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
        n = X_train.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. It is going to be clipped", stacklevel=3
                )
            batch_size = int(numpy.clip(self.batch_size, 1, n))
        xp = net.xp
        with net.device.activate():
            X_d, Y_d = net.inputs(X_train), net.device.asarray(y_train)
            grads, decay, workspace = net.new_grads(), net.new_grads(), net.workspace(batch_size)  # made once
            X_batch = xp.empty((batch_size, X_d.shape[1]), dtype=net.dtype)
            Y_batch = xp.empty((batch_size, Y_d.shape[1]), dtype=net.dtype)
            sample_idx = numpy.arange(n, dtype=int)

            def epoch():
                """One pass over the training rows; scikit-learn's loss for it, read back once."""
                nonlocal sample_idx
                if self.shuffle:
                    sample_idx = shuffle(sample_idx, random_state=self._random_state)
                order = net.device.asarray(sample_idx)  # one copy to the device per epoch
                accumulated = 0.0
                for batch in gen_batches(n, batch_size):
                    rows, m = sample_idx[batch], batch.stop - batch.start
                    xb = gather(xp, X_d, order[batch], X_batch[:m])
                    yb = gather(xp, Y_d, order[batch], Y_batch[:m])
                    weights = None if weight_train is None else weight_train[rows]
                    loss = self._loss_and_grads(xb, yb, weights, grads, decay, workspace)
                    accumulated = accumulated + loss * m  # stays on the device until the epoch ends
                    self._optimizer.step(grads)
                return float(accumulated) / n

            self.n_iter_ = 0
            try:
                for _ in range(self.max_iter):
                    self.loss_ = epoch()
                    self.n_iter_ += 1
                    self.t_ += n
                    self.loss_curve_.append(self.loss_)
                    if self.verbose:
                        print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
                    self._update_no_improvement_count(X_val, y_val, weight_val)
                    self._optimizer.iteration_ends(self.t_)
                    if self._no_improvement_count > self.n_iter_no_change:
                        what = "Validation score" if self.early_stopping else "Training loss"
                        message = f"{what} did not improve more than tol={self.tol:f} for {self.n_iter_no_change} "
                        if self._stop(message + "consecutive epochs."):
                            break
                        self._no_improvement_count = 0
                    if incremental:
                        break
                    if self.n_iter_ == self.max_iter:
                        warnings.warn(
                            f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                            "optimization hasn't converged yet.",
                            ConvergenceWarning,
                            stacklevel=3,
                        )
            except KeyboardInterrupt:  # as scikit-learn: keep what was learned, and say so
                warnings.warn("Training interrupted by user.", stacklevel=3)
            if self.early_stopping:
                net.params[...] = self._best_params

    def _stop(self, message) -> bool:
        """Stop, or (sgd with learning_rate='adaptive') divide the learning rate by 5 and go on."""
        optimizer = self._optimizer
        adaptive = getattr(optimizer, "schedule", None) == "adaptive"
        if not optimizer.stop():
            if self.verbose:
                print(f"{message} Setting learning rate to {optimizer.lr:f}")
            return False
        if self.verbose:
            print(f"{message}{' Learning rate too small.' if adaptive else ''} Stopping.")
        return True

    def _update_no_improvement_count(self, X_val, y_val, weight_val):
        if self.early_stopping:
            score = self._score(X_val, y_val, weight_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params[...] = self.net_.params
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _check_solver(self) -> bool:
        if self.solver not in ("sgd", "adam"):
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. {self.solver} is not.")
        return True

    # --- predicting --------------------------------------------------------------------

    def _forward(self, X, check_input=True):
        """The network's outputs for X, as a NumPy array."""
        check_is_fitted(self)
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], dtype=(numpy.float64, numpy.float32), reset=False)
        if scipy.sparse.issparse(X):
            X = X.toarray()
        return to_numpy(self.net_.predict(numpy.ascontiguousarray(X, dtype=self.net_.dtype)))

    def _score(self, X, y, sample_weight):
        y_pred = self._predict(X, check_input=False)
        if numpy.issubdtype(y_pred.dtype, numpy.floating) and not numpy.isfinite(y_pred).all():
            return numpy.nan
        return self._score_function(y, y_pred, sample_weight=sample_weight)

    # --- pickling: the network and its optimizer go as a checkpoint's bytes, and come back on a device that is there

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: it may be the live __dict__ itself
        net = state.pop("net_", None)
        optimizer = state.pop("_optimizer", None)
        if optimizer is not None and optimizer.net is not net:
            optimizer = None  # it trained a net that L-BFGS has since replaced (in float64): nothing to carry
        if net is not None:
            state["_net_state"] = {
                "checkpoint": checkpoint.dumps(net, optimizer),
                "device": str(net.device),
                "best": to_numpy(state.pop("_best_params")).copy(),
            }
        return state

    def __setstate__(self, state):
        saved = state.pop("_net_state", None)
        super().__setstate__(state)
        if saved is None:
            return
        where = saved["device"]
        if where.startswith("cuda") and not gpu_available(int(where.partition(":")[2] or 0)):
            warnings.warn(
                f"this {type(self).__name__} was fitted on {where}, which is not usable here: loaded onto the CPU",
                UserWarning,
                stacklevel=2,
            )
            where = "cpu"
        opened = checkpoint.loads(saved["checkpoint"], where, source=f"this pickled {type(self).__name__}'s network")
        self.net_ = opened.net
        with self.net_.device.activate():
            self._best_params = self.net_.device.asarray(saved["best"])
        if opened.optimizer is not None:
            self._optimizer = opened.optimizer

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _retyped(net, dtype) -> MLP:
    """The same network in another dtype (its weights are set by the caller)."""
    return MLP(net.sizes, net.activation.name, net.output_activation.name, net.loss_fn.name, dtype, net.device)


class _Layers(list):
    """coefs_ or intercepts_: a list of NumPy arrays whose item assignment writes the net's weights."""

    def __init__(self, estimator, targets, name):
        super().__init__(to_numpy(t) for t in targets)
        self._estimator, self._targets, self._name = estimator, targets, name

    def __setitem__(self, index, value):
        values = list(self)
        values[index] = value
        self._estimator._set_layers(values, self._targets, self._name)
        super().__init__(to_numpy(t) for t in self._targets)


def _data_loss(xp, out_activation, Y, P, row_weights):
    """scikit-learn's loss of outputs P for targets Y: squared_error, log_loss or binary_log_loss, as a device scalar.

    row_weights, when given, average to 1 over the rows.
    """
    if out_activation == "identity":
        rows = xp.square(Y - P).mean(axis=1) * 0.5  # ½ (y − ŷ)², averaged over the outputs too
    else:
        eps = xp.finfo(P.dtype).eps
        P = xp.clip(P, eps, 1 - eps)
        if out_activation == "softmax":
            rows = -(Y * xp.log(P)).sum(axis=1)
        else:
            rows = -(Y * xp.log(P) + (1 - Y) * xp.log(1 - P)).sum(axis=1)
    if row_weights is not None:
        rows = rows * row_weights
    return rows.mean()


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """scikit-learn's MLPClassifier (the same parameters and behaviour), trained by gpubp on `device`."""

    _score_function = staticmethod(accuracy_score)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc"],
            multi_output=True,
            dtype=(numpy.float64, numpy.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in the previous call "
                        f"to fit. Previously got {self.classes_}, `y` has {classes}"
                    )
            elif len(numpy.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                                 f"'y' has {classes}.")  # fmt: skip
        return X, self._label_binarizer.transform(y).astype(bool)

    def predict(self, X):
        """The predicted classes (or label indicator rows, for multilabel y)."""
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward(X, check_input)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def predict_proba(self, X):
        """The probability of each class, in the order of classes_."""
        y_pred = self._forward(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return numpy.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        proba = self.predict_proba(X)
        return numpy.log(proba, out=proba)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over X and y; the first call needs classes= (all the classes there will be)."""
        if _first_partial_fit(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """scikit-learn's MLPRegressor (squared_error loss), trained by gpubp on `device`."""

    _score_function = staticmethod(r2_score)
    _parameter_constraints: dict = {**_BaseMLP._parameter_constraints, "loss": [StrOptions({"squared_error"})]}

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        device="auto",
        dtype=None,
    ):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose, warm_start=warm_start,
            momentum=momentum, nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
            n_iter_no_change=n_iter_no_change, max_fun=max_fun, device=device, dtype=dtype,
        )  # fmt: skip
        self.loss = loss

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc"],
            multi_output=True,
            y_numeric=True,
            dtype=(numpy.float64, numpy.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def predict(self, X):
        """The predicted values: (n_samples,) for one output, (n_samples, n_outputs) for several."""
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward(X, check_input)
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over X and y, continuing from the current weights and optimizer."""
        return self._fit(X, y, sample_weight, incremental=True)


def _first_partial_fit(estimator, classes) -> bool:
    """Whether this is partial_fit's first call; sets classes_ then. Checks classes on later calls."""
    if getattr(estimator, "classes_", None) is None and classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit.")
    if classes is not None:
        if getattr(estimator, "classes_", None) is not None:
            if not numpy.array_equal(estimator.classes_, unique_labels(classes)):
                raise ValueError(
                    f"`classes={classes!r}` is not the same as on last call to partial_fit, was: {estimator.classes_!r}"
                )
        else:
            estimator.classes_ = unique_labels(classes)
            return True
    return False
