"""The trainer, in rooms (cli -> training -> models; nothing imports upward):

  commands/  what the CLI calls: fit and resume (fit.py), eval and sample of a saved run
             (restored.py), a new run's config completed from its data (prepare.py)
  engine/    the Run, its jitted steps, the loop and its callbacks, evaluation,
             steps-per-call, data parallelism, where the start went
  settings/  RunConfig and its defaults, config files and presets
  sources/   the data: the Source contract (base.py), images (MNIST family, folders), text
  rundir/    the run folder: checkpoints, the lock, writers of the record, and the readers
             behind `jaxtrain runs` and `plot`
  scoring/   the dataset's judge and the scores of samples
  host/      the process and device: host memory, the compilation cache and JAX's
             compile events, the matmul peak
  metrics.py one name per metric; errors.py the exceptions the CLI turns into one line
"""
