"""Data parallelism on JAX's SPMD engine: a one-axis device mesh, each batch split along
it, the train state replicated on every device.

The train step is one `jax.jit` with these shardings; XLA partitions it and inserts the
all-reduce of the gradients itself (no `pmap`, no hand-written collectives). The global
batch size is the configured one whatever the number of devices, so 1 and N devices
compute the same losses up to the order of floating-point sums.

Several processes (hosts): `jaxtrain fit/resume` call `jax.distributed.initialize` when
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID are set. Every process
loads the same global batch and hands JAX its own slice of it; the first process alone
writes metrics, images and progress (Orbax coordinates the checkpoint writes itself).
"""

import os
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize_distributed() -> bool:
    """Joins a multi-process run when the environment describes one; True if it did."""
    present = [name for name in DISTRIBUTED_ENV if os.environ.get(name)]
    if not present:
        return False
    if len(present) < len(DISTRIBUTED_ENV):
        missing = sorted(set(DISTRIBUTED_ENV) - set(present))
        raise ValueError(f"a multi-process run needs all of {', '.join(DISTRIBUTED_ENV)}; "
                         f"{', '.join(missing)} not set")
    # CPU processes all-reduce through gloo (the default has no cross-process collectives).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # The processes compile the same programs at the same moment; sharing one on-disk
    # compilation cache, they could read each other's half-written entries.
    jax.config.update("jax_enable_compilation_cache", False)
    jax.distributed.initialize(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                               num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                               process_id=int(os.environ["JAX_PROCESS_ID"]))
    return True


def is_primary() -> bool:
    """True in the process that writes metrics, images and progress (the only one, usually)."""
    return jax.process_index() == 0


def say(message: str) -> None:
    """A progress line on stderr, from the first process only."""
    if is_primary():
        print(message, file=sys.stderr, flush=True)


def sync_processes(name: str) -> None:
    """Waits until every process reaches this point (nothing to wait for in one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def local_copy(tree):
    """This process's copy of replicated arrays, as ordinary single-device arrays, for
    work done by one process alone (sampling images)."""
    return jax.tree.map(lambda x: x.addressable_data(0), tree)


class DataParallel:
    """The mesh of the first `devices` devices (all when None) and the two shardings a
    data-parallel step needs."""

    def __init__(self, devices: int | None = None):
        available = jax.devices()
        n = len(available) if devices is None else devices
        if not 1 <= n <= len(available):
            k = len(available)
            fix = "leave --devices out" if k == 1 else f"pass --devices 1 to {k}"
            raise ValueError(
                f"--devices {n}: JAX sees {k} {available[0].platform} "
                f"device{'s' if k > 1 else ''}; {fix} (on a CPU, XLA_FLAGS="
                "--xla_force_host_platform_device_count=N makes N devices)")
        if jax.process_count() > 1 and n != len(available):
            raise ValueError(f"--devices {n}: a multi-process run uses all {len(available)} "
                             "devices; leave --devices out")
        self.devices = n
        self.mesh = Mesh(np.array(available[:n]), ("data",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.batch = NamedSharding(self.mesh, PartitionSpec("data"))
        # S batches stacked for one call of S steps (--steps-per-call): [S, B, ...].
        self.stacked = NamedSharding(self.mesh, PartitionSpec(None, "data"))

    def check_batch_size(self, batch_size: int, accumulate: int = 1) -> None:
        if batch_size % self.devices:
            raise ValueError(f"--batch-size {batch_size} does not split evenly over "
                             f"{self.devices} devices: pass a multiple of {self.devices}")
        if batch_size % (accumulate * self.devices):
            raise ValueError(f"--batch-size {batch_size} does not split into {accumulate} "
                             f"micro-batches on each of {self.devices} devices: pass a "
                             f"multiple of {accumulate * self.devices} (--accumulate times "
                             "the devices)")

    def put_batch(self, batch: dict, stacked: bool = False) -> dict:
        """Host arrays of the global batch -> global arrays split over the mesh; each
        process contributes the rows of its own devices. `stacked`: S batches [S, B, ...]
        for one call of S steps, split along B."""
        n, index = jax.process_count(), jax.process_index()
        sharding = self.stacked if stacked else self.batch
        if n == 1:
            return jax.device_put(batch, sharding)  # the same, with less overhead

        def put(x):
            rows = x.shape[int(stacked)] // n
            mine = x[:, index * rows:(index + 1) * rows] if stacked else \
                x[index * rows:(index + 1) * rows]
            return jax.make_array_from_process_local_data(sharding, mine, x.shape)

        return jax.tree.map(put, batch)

    def abstract(self, tree):
        """An abstract pytree (from jax.eval_shape) placed replicated on the mesh: the
        restore target that puts a checkpoint, saved on any number of devices, here."""
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.replicated), tree)
