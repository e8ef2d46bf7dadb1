"""Evaluation beside the recipe: generation by a policy on held-out prompts (``relate_eval.generate``)
and the paper's Table 1 / Table 3 metrics over runs of generated ads (``relate_eval.evaluate``).

Not verl glue: these read a transformers model folder and the RL parquet, and work on any run's
output (the demo, the CPU ablation, a GPU run's checkpoints)."""
