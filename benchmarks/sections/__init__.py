"""The runner's sections, one module each; every module's ``run(ctx, quick)`` returns (rows, notes)."""
from benchmarks.sections import attention, busy, cold_start, generate, llamacpp, matmul, ops, scale, train_step

SECTION_FUNCS = {"matmul": matmul.run, "ops": ops.run, "attention": attention.run,
                 "train_step": train_step.run, "generate": generate.run, "cold_start": cold_start.run,
                 "scale": scale.run, "busy": busy.run,
                 "llamacpp": llamacpp.run}  # llamacpp skips itself without llama-cpp-python
SECTIONS = tuple(SECTION_FUNCS)
