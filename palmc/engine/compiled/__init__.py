"""The compiled (numba) engine: the equations of equations.py, in loops over a packed copy of the state.

Modules: ``jit`` (numba options, equations.py compiled inline, the on-disk cache key), ``libm_exp`` (glibc's exp
in a form that vectorises), ``mt19937`` (legacy RandomState and its Gaussian, bit for bit), ``activations`` and
``feedback`` (the activation and PAL regularizer each run chose), ``schedule`` (presentation order, noise
redraws), ``packing`` (the packed state and the per-run tables), ``neurons`` (the loop over blocks of four
neurons), ``lanes`` (the loop over blocks of four runs, for small networks), ``driver`` (``advance``: segments,
the recorder, loading).
"""
