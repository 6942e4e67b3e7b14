"""The bounds on every number a user gives (options, the models file, the GPU file).

Our policy, chosen far beyond any real deployment and low enough that every product and ratio of
them stays an exact float: a value outside, NaN, inf or a 400-digit number is a usage error (exit
2), never an overflow deep inside the estimate.
"""

from __future__ import annotations

#: Tokens and sequences (--max-model-len, --max-num-batched-tokens, --batch-size, --max-num-seqs):
#: vLLM keeps them in int32 (positions, block tables, its schedulers' counters), so 2**31 - 1.
MAX_TOKENS = (1 << 31) - 1
#: GPUs (--tensor-parallel-size, --count): 4096, beyond the largest single training cluster's
#: tensor-parallel group by orders of magnitude (one node has 8 or 16).
MAX_GPUS = 4096
#: --timeout in seconds: a day.
MAX_TIMEOUT_S = 86_400.0
#: cache prune --older-than in days: a century.
MAX_AGE_DAYS = 36_500.0
