"""The runner's sections, one module each; every module's ``run(ctx, quick)`` returns (rows, notes)."""
from benchmarks.sections import attention, cold_start, generate, llamacpp, matmul, ops, train_step

SECTION_FUNCS = {"matmul": matmul.run, "ops": ops.run, "attention": attention.run,
                 "train_step": train_step.run, "generate": generate.run, "cold_start": cold_start.run}
SECTION_FUNCS["llamacpp"] = llamacpp.run  # skips itself without llama-cpp-python
SECTIONS = tuple(SECTION_FUNCS)
