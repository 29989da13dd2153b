"""The notes' two-layer sigmoid network: one step of backpropagation, printed with the blame of each layer.

    python examples/backprop_by_hand.py

2 inputs, 2 hidden neurons, 1 output, all sigmoid, error E = ½ (y − ŷ)², learning rate 0.5.
"""

import numpy as np

import gpubp

net = gpubp.MLP([2, 2, 1], activation="sigmoid", loss="mse", dtype="float64", device="cpu")
net.weights[0][...] = [[0.15, 0.25], [0.20, 0.30]]  # Wh: row i holds the weights leaving input i
net.biases[0][...] = [0.35, 0.35]
net.weights[1][...] = [[0.40], [0.45]]  # Wo
net.biases[1][...] = [0.60]
X, Y = np.array([[0.05, 0.10]]), np.array([[0.01]])

print("Forward pass")
trace = net.forward(X)
print(f"  hidden z = x·Wh + b      = {trace.z[0][0].round(6)}")
print(f"  hidden a = σ(z)          = {trace.a[1][0].round(6)}")
print(f"  output z = h·Wo + b      = {trace.z[1][0].round(6)}")
print(f"  output ŷ = σ(z)          = {trace.output[0].round(6)}")
print(f"  error  E = ½ (y − ŷ)²    = {net.loss(trace.output, Y):.6f}")

print("Backward pass: the flow of blame")
grads = net.backward(trace, Y)
print(f"  output blame δo = (ŷ − y) · ŷ(1 − ŷ)          = {grads.deltas[1][0].round(6)}")
print(f"  ∂E/∂Wo = h · δo                              = {grads.weights[1][:, 0].round(6)}")
print(f"  hidden blame δh = (δo · Wo) ⊙ h(1 − h)         = {grads.deltas[0][0].round(6)}")
print(f"  ∂E/∂Wh = x · δh                              = {grads.weights[0].round(6).tolist()}")

print("Gradient descent: W_new = W_old − 0.5 × gradient")
gpubp.SGD(net, lr=0.5).step(grads)
print(f"  Wo = {net.weights[1][:, 0].round(6)}   Wh = {net.weights[0].round(6).tolist()}")
print(f"  error after the step: {net.loss(net.predict(X), Y):.6f}")
