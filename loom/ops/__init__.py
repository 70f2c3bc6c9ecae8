"""The math of loom's layers and of its LLM runtime: pure functions on the Python array API.

The contract every module of this package keeps (checked in CI):

* **Pure functions, namespace passed in.** Every op takes its arrays and the array-API
  namespace ``xp`` (``backend.xp``: ``array_api_compat``'s view of NumPy or CuPy) and
  reads no global state. ``(forward, *_backward)`` twins: the backward is the exact
  vector-Jacobian product of the forward, checked by finite differences.
* **The standard and nothing else.** Only what the array-API standard (2024.12) defines:
  its functions rather than array methods (``xp.reshape(x, shape)``, ``xp.astype``,
  ``xp.matrix_transpose``; ``x.T`` only on 2-D arrays), an index for every axis
  (``x[0, :]``, ``x[0, ...]``), dtypes from ``xp`` or from the input arrays, no ``out=``.
  ``tests/ops`` runs every public function under ``array_api_strict`` (``nox -s strict``),
  which rejects anything else, and compares it with NumPy within 1e-6.
* **Backend knowledge lives in** :mod:`loom.backend`. An op never asks which library it
  runs on; where a measured fast path needs something outside the standard (an array's own
  ``reshape`` method, a 0-d NumPy constant, NumPy's own ufunc) it calls a named helper of
  :mod:`loom.backend.fast_paths`, which falls back to the standard spelling for every
  other namespace. Tables an op needs on every call (RoPE, causal masks, LSTM gate
  constants) are built once per device by :func:`loom.backend.device_constant`; NumPy
  appears in this package only to compute such host-side tables.
* **Imports**: ``loom.ops`` imports only ``loom.ops``, ``loom.backend`` and ``loom.errors``
  (``tests/test_layering.py``).

Modules: :mod:`~loom.ops.activations`, :mod:`~loom.ops.dense`, :mod:`~loom.ops.conv2d`,
:mod:`~loom.ops.recurrent`, :mod:`~loom.ops.attention` (LOOM's multi-head attention),
:mod:`~loom.ops.norms`, :mod:`~loom.ops.softmax`, :mod:`~loom.ops.rope`,
:mod:`~loom.ops.swiglu`, :mod:`~loom.ops.combine` (Parallel merges), :mod:`~loom.ops.losses`
and :mod:`~loom.ops.transformer` (the LLM's attention over a KV cache). RoPE, the norms and
the softmax exist once and serve both ``loom.nn`` and ``loom.llm``.
"""
