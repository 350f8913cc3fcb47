"""What the PyTorch sides of the benchmarks (torch_scoring.py, torch_training.py) share.

Import it, and call pin_openblas_threads, before numpy and torch load.
"""
import os


def pin_openblas_threads(argv):
    """Sizes OpenBLAS's pool from `--threads N` in argv, as Pai's --threads does. Debian's torch
    (and numpy) run matrix products on OpenBLAS's own pool, one thread per core unless
    OPENBLAS_NUM_THREADS is set before either loads."""
    if '--threads' in argv[:-1]:
        os.environ.setdefault('OPENBLAS_NUM_THREADS', argv[argv.index('--threads') + 1])


def rss_mb():
    """This process's resident set size now, in MB (VmRSS)."""
    return _status_mb('VmRSS:')


def reset_peak_rss():
    """Starts a new peak-RSS measurement (VmHWM) from what this process holds now (Linux)."""
    import gc
    gc.collect()
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def _status_mb(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def peak_rss_mb():
    """This process's peak resident set size in MB: VmHWM, not ru_maxrss, which on Linux keeps the
    spawning process's peak across exec (a child of a 400 MB parent reports 400 MB)."""
    return _status_mb('VmHWM:')
