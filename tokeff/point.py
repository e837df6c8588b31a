"""Old home of the sweep runner, kept so configs naming `tokeff.point:train_and_evaluate` still run.

Moved to `tokeff.sweep.engine`; remove this alias once no config or app names it.
"""

from tokeff.cache import enable_compilation_cache
from tokeff.sweep.engine import eval_records, train_and_evaluate

__all__ = ["enable_compilation_cache", "eval_records", "train_and_evaluate"]
