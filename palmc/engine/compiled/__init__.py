"""The compiled (numba) engine: the same equations as the NumPy step, in loops over a packed state.

Modules: ``jit`` (numba options, equations.py compiled inline, the cache key), ``libm_exp`` (glibc's exp, in a
form that vectorises), ``mt19937`` (legacy RandomState and its Gaussian, bit for bit), ``packing`` (the packed
state and per-run tables), ``neurons`` (the loop over blocks of four neurons), ``lanes`` (the loop over blocks of
four runs, for tiny networks), ``driver`` (``advance``: segments, the recorder, loading).
"""
