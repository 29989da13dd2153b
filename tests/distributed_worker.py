"""Run by tests/test_distributed.py under `mpiexec -n K`: trains with fit(distributed=True).

python tests/distributed_worker.py parity DTYPE OUT      20 steps; rank 0 writes OUT.npz and OUT.safetensors,
                                                        every rank r its weights and velocity to OUT.rank{r}.npz
python tests/distributed_worker.py forever OUT           trains until killed, saving every epoch
python tests/distributed_worker.py shared-gpu PLACEMENT OUT  staged GPU nets ("one GPU" or "a GPU each"): every
                                                        rank r writes what backends "auto" and "nccl" choose
                                                        to OUT.rank{r}.txt
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gpubp  # noqa: E402

ROWS, BATCH, EPOCHS = 65, 16, 4  # 5 steps an epoch, 20 in all; the last batch has 1 row: some ranks get none


def setup(dtype, rank=0):
    """The data, net and optimizer of the parity run, as rank `rank` builds them.

    Rank 0's are those of the one-process run. Every other rank starts from other
    weights and a velocity that is not zero: fit must replace both with rank 0's.
    """
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(ROWS, 6)), rng.integers(0, 3, size=ROWS)
    net = gpubp.MLP([6, 10, 7, 3], activation="tanh", loss="cross_entropy", dtype=dtype, device="cpu", seed=5 + rank)
    opt = gpubp.SGD(net, lr=0.1, momentum=0.9, weight_decay=1e-3)
    if rank:
        opt.velocity[...] = np.random.default_rng(rank).normal(size=opt.velocity.shape)
    return X, y, net, opt


def train(net, opt, X, y, distributed, callbacks=()):
    return gpubp.fit(
        net, X, y, epochs=EPOCHS, batch_size=BATCH, optimizer=opt, seed=2, progress=False,
        distributed=distributed, callbacks=callbacks, timeout=60,
    )  # fmt: skip


def main():
    mode = sys.argv[1]
    rank = gpubp.distributed.communicator().rank
    if mode == "parity":
        dtype, out = sys.argv[2], sys.argv[3]
        X, y, net, opt = setup(dtype, rank)
        history = train(net, opt, X, y, True, [gpubp.ModelCheckpoint(out + ".safetensors")])
        np.savez(f"{out}.rank{rank}.npz", params=net.params, velocity=opt.velocity)
        if rank == 0:
            np.savez(
                out + ".npz",
                params=net.params,
                predictions=net.predict(X),
                losses=history.loss,
                accuracy=history.accuracy,
            )
    elif mode == "shared-gpu":
        # Staged: the ranks' nets say cuda:0; the bus id is the same on every rank, or one of its own.
        bus_id = "0000:3b:00.0" if sys.argv[2] == "one GPU" else f"0000:{59 + rank:02x}:00.0"
        gpubp.backend.Device.bus_id = property(lambda self: bus_id)
        gpubp.backend.cuda_device_count = lambda: 1 if sys.argv[2] == "one GPU" else 2
        chosen = {}
        for backend in ("auto", "nccl"):
            try:
                chosen[backend] = gpubp.distributed.communicator(gpubp.Device("cuda", 0), backend, 60).backend
            except gpubp.GpubpError as e:
                chosen[backend] = f"{type(e).__name__}: {e}"
        with open(f"{sys.argv[3]}.rank{rank}.txt", "w") as f:  # a file each: the ranks' output may interleave
            f.write("".join(f"{backend}: {text}\n" for backend, text in chosen.items()))
    elif mode == "forever":
        out, timeout = sys.argv[2], float(sys.argv[3])
        print(f"rank {rank} pid {os.getpid()}", flush=True)
        rng = np.random.default_rng(0)
        X, y = rng.random((512, 32), dtype=np.float32), rng.integers(0, 4, size=512)
        net = gpubp.MLP([32, 64, 4], loss="cross_entropy", device="cpu")
        gpubp.fit(
            net, X, y, epochs=10**6, batch_size=64, progress=False, distributed=True, timeout=timeout,
            callbacks=[gpubp.ModelCheckpoint(out)],
        )  # fmt: skip


if __name__ == "__main__":
    main()
