"""Every step of the math, by hand: forward, backward (the blame per layer), and one SGD step."""

import numpy as np

import gpubp

net = gpubp.MLP([2, 3, 1], activation="sigmoid", loss="mse", dtype="float64", device="auto")
opt = gpubp.SGD(net, lr=0.5)
X = np.array([[0.05, 0.10], [0.9, 0.2]])
Y = np.array([[0.01], [0.99]])

for step in range(3):
    trace = net.forward(X)  # trace.z[l] = a[l] @ W[l] + b[l];  trace.a[l+1] = σ(z[l])
    grads = net.backward(trace, Y)  # δ_L = (ŷ − y) ⊙ σ'(z_L);  δ_l = (δ_{l+1} @ W_{l+1}ᵀ) ⊙ σ'(z_l)
    print(f"step {step}: E = {net.loss(trace.output, Y):.6f}")
    for l, delta in enumerate(grads.deltas):
        print(f"  layer {l}: blame δ = {gpubp.to_numpy(delta).round(5).tolist()}")
        print(f"           ∂E/∂W  = {gpubp.to_numpy(grads.weights[l]).round(5).tolist()}")
    opt.step(grads)  # W_new = W_old − lr × ∂E/∂W
