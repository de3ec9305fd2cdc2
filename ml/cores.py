"""How many cores this process has, and how model processes share them. No numpy, no TensorFlow: the web's
gunicorn master and the launcher read it before any model process starts."""
import os

__all__ = ["available_cores", "intra_op_threads_for"]


def available_cores() -> int:
    """The cores this process may run on: its affinity mask (a container's CPU set), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def intra_op_threads_for(processes: int) -> int:
    """TensorFlow intra-op threads for each of ``processes`` model processes sharing this machine's cores:
    the cores split between them (at least one each). One process on every core loses time to the threads of
    each operation waiting for one another (a depthwise convolution is short); processes of one thread each do
    not (docs/RESULTS.md, "Session 13": the trained ensemble's batched forward pass 48.6–52.0
    images/s as 1 process × 2 threads, 79.0–82.4 as 2 processes × 1 thread)."""
    return max(1, available_cores() // max(1, int(processes)))
