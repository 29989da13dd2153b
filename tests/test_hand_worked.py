"""One SGD step of a tiny sigmoid network, worked out by hand.

The net is the seed's: 2 inputs, 2 sigmoid hidden neurons, 1 sigmoid output,
error E = ½ (y − ŷ)², learning rate 0.5. Every expected number below is
written out from its formula, so the test does not lean on the code it checks.
"""

import numpy as np
import pytest

import gpubp

X = np.array([[0.05, 0.10]])
Y = np.array([[0.01]])
LR = 0.5


@pytest.fixture
def net(device):
    net = gpubp.MLP([2, 2, 1], activation="sigmoid", loss="mse", dtype="float64", device=device)
    xp = net.xp
    # Row i of W holds the weights leaving input i (z = a_in @ W + b).
    net.weights[0][...] = xp.asarray([[0.15, 0.25], [0.20, 0.30]])
    net.biases[0][...] = xp.asarray([0.35, 0.35])
    net.weights[1][...] = xp.asarray([[0.40], [0.45]])
    net.biases[1][...] = xp.asarray([0.60])
    return net


def close(actual, expected):
    np.testing.assert_allclose(gpubp.to_numpy(actual), expected, rtol=0, atol=1e-8)


def test_forward(net):
    trace = net.forward(X)
    # Hidden weighted inputs:
    #   z_h1 = 0.05·0.15 + 0.10·0.20 + 0.35 = 0.0075 + 0.02 + 0.35 = 0.3775
    #   z_h2 = 0.05·0.25 + 0.10·0.30 + 0.35 = 0.0125 + 0.03 + 0.35 = 0.3925
    close(trace.z[0], [[0.3775, 0.3925]])
    # Hidden activations: σ(0.3775) = 1/(1 + e^−0.3775) = 1/1.685563... = 0.593269992107187
    #                     σ(0.3925) = 1/(1 + e^−0.3925) = 1/1.675354... = 0.596884378259767
    close(trace.a[1], [[0.593269992107187, 0.596884378259767]])
    # Output: z_o = 0.593269992·0.40 + 0.596884378·0.45 + 0.60
    #             = 0.237307997 + 0.268597970 + 0.60 = 1.105905967059770
    close(trace.z[1], [[1.10590596705977]])
    # ŷ = σ(1.105905967) = 1/(1 + 0.330911...) = 0.751365069552316
    close(trace.output, [[0.751365069552316]])
    # E = ½ (0.01 − 0.751365070)² = ½ · 0.549622166 = 0.274811083176155
    assert net.loss(trace.output, Y) == pytest.approx(0.274811083176155, abs=1e-8)


def test_backward(net):
    grads = net.backward(net.forward(X), Y)
    # Output blame: δ_o = (ŷ − y) · ŷ(1 − ŷ) = 0.741365070 · 0.186815602 = 0.138498561628557
    close(grads.deltas[1], [[0.138498561628557]])
    # ∂E/∂W_o = h · δ_o: 0.593269992 · 0.138498562 = 0.0821670405642308
    #                    0.596884378 · 0.138498562 = 0.0826676278475333
    close(grads.weights[1], [[0.0821670405642308], [0.0826676278475333]])
    close(grads.biases[1], [0.138498561628557])
    # Hidden blame: error reaching h_i is δ_o · w_i, scaled by σ'(z_hi) = h_i (1 − h_i):
    #   δ_h1 = 0.138498562 · 0.40 · 0.593269992 · 0.406730008 = 0.0553994247 · 0.241300709 = 0.0133679204228875
    #   δ_h2 = 0.138498562 · 0.45 · 0.596884378 · 0.403115622 = 0.0623243527 · 0.240613417 = 0.0149960754888969
    close(grads.deltas[0], [[0.0133679204228875, 0.0149960754888969]])
    # ∂E/∂W_h[i, j] = x_i · δ_hj
    close(
        grads.weights[0],
        [
            [0.05 * 0.0133679204228875, 0.05 * 0.0149960754888969],  # 0.000668396021, 0.000749803774
            [0.10 * 0.0133679204228875, 0.10 * 0.0149960754888969],  # 0.001336792042, 0.001499607549
        ],
    )
    close(grads.biases[0], [0.0133679204228875, 0.0149960754888969])


def test_one_step(net):
    gpubp.SGD(net, lr=LR).step(net.backward(net.forward(X), Y))
    # W_new = W_old − 0.5 · gradient
    #   0.40 − 0.5 · 0.0821670406 = 0.358916479717885
    #   0.45 − 0.5 · 0.0826676278 = 0.408666186076233
    #   0.60 − 0.5 · 0.1384985616 = 0.530750719185722
    close(net.weights[1], [[0.358916479717885], [0.408666186076233]])
    close(net.biases[1], [0.530750719185722])
    #   0.15 − 0.5 · 0.000668396 = 0.149665801989428   0.25 − 0.5 · 0.000749804 = 0.249625098112778
    #   0.20 − 0.5 · 0.001336792 = 0.199331603978856   0.30 − 0.5 · 0.001499608 = 0.299250196225555
    close(net.weights[0], [[0.149665801989428, 0.249625098112778], [0.199331603978856, 0.299250196225555]])
    #   0.35 − 0.5 · 0.0133679204 = 0.343316039788556   0.35 − 0.5 · 0.0149960755 = 0.342501962255552
    close(net.biases[0], [0.343316039788556, 0.342501962255552])
