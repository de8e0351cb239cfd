"""Data parallelism on JAX's SPMD engine: a one-axis device mesh, each batch split along
it, the train state replicated on every device.

The train step is one `jax.jit` with these shardings; XLA partitions it and inserts the
all-reduce of the gradients itself (no `pmap`, no hand-written collectives). The global
batch size is the configured one whatever the number of devices, so 1 and N devices
compute the same losses up to the order of floating-point sums.

Several processes (hosts): `jaxtrain fit/resume` call `jax.distributed.initialize` when
the environment describes a run of several processes (`detect_cluster`): the explicit
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID first, else JAX's own
cluster detection, which we trigger only where it means several processes: a Slurm step
of more than one task (srun), a Kubernetes Indexed Job or JobSet (JOB_COMPLETION_INDEX;
JAX asks the Kubernetes API through the `kubernetes` package), an Open MPI launch of
more than one rank. Every process loads the same global batch and hands JAX its own
slice of it; the first process alone writes metrics, images and progress (Orbax
coordinates the checkpoint writes itself), so the workdir must be on storage every
process sees (`check_shared`).
"""

import os
import sys
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
# What JAX's SlurmCluster reads (jax/_src/clusters/slurm_cluster.py); srun sets them in
# every task. The coordinator is the step's first node, its port derived from the job id
# (JAX_COORDINATOR_PORT overrides it).
SLURM_ENV = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
             "SLURM_LOCALID")
CLUSTERS = {"slurm": "slurm", "open mpi": "ompi", "kubernetes": None}  # JAX's method names

_joined: str | None = None  # how this process joined its run (detect_cluster's name)


def _number(name: str) -> int:
    text = os.environ[name]
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a whole number") from None


def detect_cluster() -> str | None:
    """How this process was started as one of several: "JAX_* variables", "slurm",
    "kubernetes" or "open mpi"; None for a run of one process (no cluster, or one task
    of one, as `jaxtrain fit` inside `salloc`, or JAXTRAIN_CLUSTER=none: each task its own
    run). A half-described cluster is a ValueError that names what is missing."""
    env = os.environ
    present = [name for name in DISTRIBUTED_ENV if env.get(name)]
    if present:  # explicit, so it wins over any cluster around it
        missing = [name for name in DISTRIBUTED_ENV if name not in present]
        if missing:
            raise ValueError(f"a multi-process run needs all of {', '.join(DISTRIBUTED_ENV)}; "
                             f"{', '.join(missing)} not set")
        for name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
            _number(name)
        return "JAX_* variables"
    if env.get("JAXTRAIN_CLUSTER") == "none":  # one run a task, as a sweep's Indexed Job
        return None
    if env.get("SLURM_NTASKS") and _number("SLURM_NTASKS") > 1:
        missing = [name for name in SLURM_ENV if not env.get(name)]
        if missing:
            raise ValueError(f"SLURM_NTASKS={env['SLURM_NTASKS']} but {', '.join(missing)} "
                             f"not set: start every task with srun (or run one task)")
        return "slurm"
    if env.get("JOB_COMPLETION_INDEX") and env.get("KUBERNETES_SERVICE_HOST"):
        try:
            import kubernetes  # noqa: F401  (what JAX's K8sCluster asks the API with)
        except ImportError:
            raise ValueError(
                "a Kubernetes Indexed Job (JOB_COMPLETION_INDEX is set) joins its pods "
                "through the `kubernetes` package, which is not installed: pip install "
                "kubernetes, or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
                "JAX_PROCESS_ID; for one run a pod (a sweep), set JAXTRAIN_CLUSTER=none") from None
        return "kubernetes"
    if env.get("OMPI_COMM_WORLD_SIZE") and _number("OMPI_COMM_WORLD_SIZE") > 1:
        if not env.get("OMPI_MCA_orte_hnp_uri"):
            raise ValueError(f"OMPI_COMM_WORLD_SIZE={env['OMPI_COMM_WORLD_SIZE']} but "
                             "OMPI_MCA_orte_hnp_uri (what JAX reads; Open MPI 5 does not set "
                             "it) not set: set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES "
                             "and JAX_PROCESS_ID")
        return "open mpi"
    return None


def initialize_distributed() -> bool:
    """Joins a multi-process run when the environment describes one; True if it did."""
    global _joined
    cluster = detect_cluster()
    if cluster is None:
        return False
    # CPU processes all-reduce through gloo (the default has no cross-process collectives).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # The processes compile the same programs at the same moment; sharing one on-disk
    # compilation cache, they could read each other's half-written entries.
    jax.config.update("jax_enable_compilation_cache", False)
    if cluster == "JAX_* variables":  # "deactivate": no cluster overrides a given value
        jax.distributed.initialize(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                                   num_processes=_number("JAX_NUM_PROCESSES"),
                                   process_id=_number("JAX_PROCESS_ID"),
                                   cluster_detection_method="deactivate")
    else:  # JAX reads the cluster (its K8sCluster has no method name: auto-detection)
        jax.distributed.initialize(cluster_detection_method=CLUSTERS[cluster])
    _joined = cluster
    return True


def processes() -> str:
    """", N processes (cluster)" for the start line of a multi-process run, else ""."""
    n = jax.process_count()
    return f", {n} processes ({_joined})" if n > 1 else ""


def check_shared(path: Path, verb: str = "sees") -> None:
    """Stops every process with one line when some see `path` and others do not: the
    workdir is not on storage they share. All processes call it at once and learn every
    answer, so none is left waiting for one that stopped."""
    if jax.process_count() == 1:
        return
    seen = np.asarray(multihost_utils.process_allgather(np.int32(path.exists())))
    if seen.all() or not seen.any():  # none: the caller's own check names the problem
        return
    blind = [str(i) for i in np.flatnonzero(seen == 0)]
    raise ValueError(f"process{'es' if len(blind) > 1 else ''} {', '.join(blind)} cannot "
                     f"see {path} that process {int(np.flatnonzero(seen)[0])} {verb}: the "
                     "workdir must be on storage every process sees (a shared filesystem)")


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
