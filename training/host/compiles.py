"""The programs XLA compiles, as JAX itself reports them (jax.monitoring): each backend
compile's seconds by the jitted function's name, and whether JAX's persistent
compilation cache served it (then the seconds are the cache load, not a compile).

One listener pair per process (JAX offers no way to remove one) feeds the collectors
that are open; a command opens one for its run (training/engine/startup.py).
"""

import threading

from jax import monitoring

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # around compile or load
CACHE_HIT = "/jax/compilation_cache/cache_hits"  # recorded inside it, on a hit

_open: list["Compiles"] = []
_state = threading.local()  # a cache hit seen by this thread's compile in progress
_listening = False


def _on_event(event: str, **kwargs) -> None:
    if event == CACHE_HIT:
        _state.hit = True


def _on_duration(event: str, seconds: float, **kwargs) -> None:
    if event == BACKEND_COMPILE:
        cached, _state.hit = getattr(_state, "hit", False), False
        for collector in _open:
            collector.programs.append((_name(str(kwargs.get("fun_name", "?"))), seconds, cached))


def _name(fun_name: str) -> str:
    """The jitted function's own name: "jit(train_step)" -> "train_step"."""
    return fun_name[4:-1] if fun_name.startswith("jit(") and fun_name.endswith(")") else fun_name


class Compiles:
    """Collects (name, seconds, cached) of every program compiled while it is open."""

    def __init__(self):
        global _listening
        if not _listening:
            monitoring.register_event_listener(_on_event)
            monitoring.register_event_duration_secs_listener(_on_duration)
            _listening = True
        self.programs: list[tuple[str, float, bool]] = []
        _open.append(self)

    def close(self) -> None:
        if self in _open:
            _open.remove(self)

    def take(self, least: float = 0.05) -> tuple[dict, list]:
        """({name: seconds}, [names the cache served]) of the programs compiled since the
        last take. Programs of one name add up; a name is "cached" if every compile of it
        was a cache load. Names under `least` seconds (the many one-op programs of eager
        code, such as a model's init) add up under "others"."""
        seconds, fresh = {}, set()
        for name, s, cached in self.programs:
            seconds[name] = seconds.get(name, 0.0) + s
            if not cached:
                fresh.add(name)
        self.programs = []
        small = [name for name, s in seconds.items() if s < least]
        if len(small) > 1:
            others = sum(seconds.pop(name) for name in small)
            fresh = fresh - set(small) | ({"others"} if fresh & set(small) else set())
            seconds["others"] = others
        return seconds, sorted(set(seconds) - fresh)
